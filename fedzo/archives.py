"""Run directories kept in one zip archive per experiment, and read back as directories.

An experiment's finished run directories (``analysis/results/E/runs/...``, hundreds of small
JSONL and JSON files) are packed into one archive beside them, ``E/runs.zip``. Everything that
reads a run (``fedzo report``, ``plot``, ``evaluate --run``, ``calibrate --reprice`` and the
experiment scripts that reuse finished runs) goes through :func:`locate`: a path that does
not exist on disk but lies inside a packed directory is read from the archive, extracted once
into the user cache (``$FEDZO_CACHE/archives/<digest>``, see :func:`fedzo.assets.cache_root`).
New runs of an experiment go to ``E/runs/`` on disk as before; a path found on disk always
wins over the archive. Packing merges into an existing archive, so an experiment extended
with more seeds is packed again::

    python -m fedzo.archives pack analysis/results/zo_efficacy/runs     # -> runs.zip, dir removed
    python -m fedzo.archives list analysis/results/zo_efficacy/runs.zip
    python -m fedzo.archives unpack analysis/results/zo_efficacy/runs.zip  # to resume or edit a run

Archives are deterministic (sorted members, fixed timestamps), so packing the same files gives
the same bytes.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from fedzo.assets import cache_root
from fedzo.errors import ConfigError

SUFFIX = ".zip"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold: packing is reproducible
_GLOB = set("*?[")
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (archive, mtime, size): digest, so a loop over runs hashes once


def archive_of(path: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """The archive that holds ``path`` (the packed directory ``D`` is ``D.zip``) and the path
    inside it ("" for the packed directory itself); None when no ancestor is packed."""
    p = Path(path)
    for ancestor in (p, *p.parents):
        if not ancestor.name:
            continue
        packed = ancestor.with_name(ancestor.name + SUFFIX)
        if packed.is_file():
            inner = p.relative_to(ancestor).as_posix()
            return packed, "" if inner == "." else inner
    return None


def locate(path: str | os.PathLike[str]) -> Path:
    """Where to read the run (or any file of a run) at ``path``: ``path`` itself when it exists
    on disk or no archive holds it, else its copy extracted from the archive."""
    p = Path(path)
    if p.exists():
        return p
    found = archive_of(p)
    if found is None:
        return p
    packed, inner = found
    copy = extracted(packed) / inner
    return copy if copy.exists() else p


def archived_note(path: str | os.PathLike[str]) -> str | None:
    """For a path that lives only in an archive, how to change it (None otherwise)."""
    p = Path(path)
    if p.exists() or (found := archive_of(p)) is None or locate(p) == p:
        return None
    return (f"{p} is kept in the archive {found[0]} (read-only); to resume or change it, unpack it first: "
            f"python -m fedzo.archives unpack {found[0]}")


def expand(patterns: Iterable[str]) -> list[str]:
    """Command-line run arguments with shell patterns the shell could not expand (their runs sit
    in an archive) matched against the archive's directories; other arguments unchanged."""
    out: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if not _GLOB & set(pattern) or path.exists():
            out.append(pattern)
            continue
        parts = path.parts
        first = next(k for k, part in enumerate(parts) if _GLOB & set(part))
        found = archive_of(Path(*parts[:first]) if first else Path("."))
        hits: list[str] = []
        if found is not None:
            top = found[0].with_suffix("")
            for d in sorted(_directories(found[0])):
                cand = (top / d).parts
                if len(cand) == len(parts) and all(fnmatch.fnmatchcase(c, q) for c, q in zip(cand, parts, strict=True)):
                    hits.append(str(top / d))
        out.extend(hits or [pattern])
    return out


def _directories(packed: Path) -> set[str]:
    """Every directory inside ``packed`` (posix, relative to the packed directory)."""
    with zipfile.ZipFile(packed) as z:
        return {str(parent) for name in z.namelist() for parent in PurePosixPath(name).parents if str(parent) != "."}


def extracted(packed: Path) -> Path:
    """The archive's contents, extracted once into the cache (keyed by the archive's digest)."""
    st = packed.stat()
    key = (str(packed.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(packed.read_bytes()).hexdigest()[:16]
    digest = _DIGESTS[key]
    root = cache_root() / "archives" / digest
    if (root / ".complete").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root.parent))
    try:
        with zipfile.ZipFile(packed) as z:
            for name in z.namelist():
                _check_member(packed, name)
            z.extractall(tmp)
        (tmp / ".complete").write_text(str(packed), encoding="utf-8")
        try:
            tmp.rename(root)
        except OSError:  # another process extracted it first
            if not (root / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _check_member(packed: Path, name: str) -> None:
    """Refuse a member that would land outside the extraction folder."""
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise ConfigError(f"{packed}: member {name!r} points outside the archive; refusing to extract it")


def _files(directory: Path) -> dict[str, Path]:
    return {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}


def pack(directory: str | os.PathLike[str], *, remove: bool = True) -> Path:
    """Pack ``directory`` into ``directory.zip`` (merged with the archive already there; a file
    present in both must be identical), check the archive by reading every member back, then
    (``remove``) delete the directory. Returns the archive's path."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: no such directory to pack")
    packed = d.with_name(d.name + SUFFIX)
    members = {n: p.read_bytes() for n, p in _files(d).items()}
    if packed.is_file():
        with zipfile.ZipFile(packed) as z:
            for name in z.namelist():
                old = z.read(name)
                if name in members and members[name] != old:
                    raise ConfigError(f"{d / name}: differs from the copy in {packed}; unpack the archive "
                                      "(python -m fedzo.archives unpack) and decide which one to keep")
                members[name] = old
    tmp = packed.with_name(packed.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, members[name], compresslevel=9)
    with zipfile.ZipFile(tmp) as z:
        if z.testzip() is not None or any(z.read(n) != members[n] for n in members):
            raise ConfigError(f"{tmp}: the archive does not read back as written; nothing was removed")
    os.replace(tmp, packed)
    if remove:
        shutil.rmtree(d)
    return packed


def unpack(packed: str | os.PathLike[str]) -> Path:
    """Extract ``D.zip`` into ``D`` (refusing to overwrite a differing file) and remove the archive."""
    z_path = Path(packed)
    if z_path.suffix != SUFFIX or not z_path.is_file():
        raise ConfigError(f"{z_path}: not a run archive (expected an existing D{SUFFIX})")
    d = z_path.with_suffix("")
    with zipfile.ZipFile(z_path) as z:
        for name in z.namelist():
            _check_member(z_path, name)
            target = d / name
            if target.exists() and target.read_bytes() != z.read(name):
                raise ConfigError(f"{target}: exists and differs from the archive's copy; move it away first")
        z.extractall(d)
    z_path.unlink()
    return d


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fedzo.archives {pack,unpack,list}``."""
    p = argparse.ArgumentParser(prog="python -m fedzo.archives", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    pk = sub.add_parser("pack", help="pack run directories into DIR.zip (merged) and remove DIR")
    pk.add_argument("dirs", nargs="+", metavar="DIR")
    pk.add_argument("--keep", action="store_true", help="keep the directory after packing")
    sub.add_parser("unpack", help="extract DIR.zip into DIR and remove the archive").add_argument("archive")
    sub.add_parser("list", help="the run directories an archive holds").add_argument("archive")
    a = p.parse_args(argv)
    try:
        if a.action == "pack":
            for d in a.dirs:
                print(pack(d, remove=not a.keep))
        elif a.action == "unpack":
            print(unpack(a.archive))
        else:
            with zipfile.ZipFile(a.archive) as z:
                runs = sorted({str(PurePosixPath(n).parent) for n in z.namelist() if n.endswith("scenario.yaml")})
            print("\n".join(runs))
    except (ConfigError, OSError, zipfile.BadZipFile) as exc:
        print(f"fedzo.archives: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
