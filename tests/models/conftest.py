"""Model tests never download: an empty temp cache and a refusing downloader."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixture_archives import offline_cache


@pytest.fixture(autouse=True)
def _offline_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real downloads: an empty temp cache and a downloader that refuses."""
    offline_cache(monkeypatch, tmp_path / "cache")
