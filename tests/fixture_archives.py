"""Helpers shared by the tests that build fake asset archives (no real downloads)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from fedzo import assets


def tar_gz_bytes(files: dict[str, bytes]) -> bytes:
    """A .tar.gz archive holding ``files`` (member name -> content), in memory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def offline_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """Any real download fails, and the default asset cache is ``cache``."""

    def refuse(asset: assets.Asset, dest: Path) -> Path:
        raise OSError("network disabled in tests")

    monkeypatch.setattr(assets, "pip_download", refuse)
    monkeypatch.setenv("FEDZO_CACHE", str(cache))
