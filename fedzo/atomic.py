"""Writes that land whole or not at all, and one clear error when the disk refuses them.

A full disk (``ENOSPC``), a quota, a read-only or unwritable directory must never leave a
half record that a resume would have to guess about, nor a truncated report: appends are
rolled back to the file's previous length when they fail, and whole files are written to a
temporary file in the same directory and renamed over the target. Either way the failure is
a :class:`fedzo.errors.WriteError` that names the file and the cause. Standard library only
(the ZO core's update log uses it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from fedzo.errors import WriteError

Before = Callable[[TextIO], None]


def _refused(path: Path, exc: OSError) -> WriteError:
    return WriteError(f"{path}: cannot write it ({exc.strerror or exc}); free space or fix the directory's "
                      "permissions")


def append_whole(path: str | os.PathLike[str], text: str, before: Before | None = None) -> None:
    """Append ``text`` and fsync it; on failure cut the file back to its length before, so
    it holds all of ``text`` or none of it. ``before(f)`` runs first (the kill-point hook)."""
    p = Path(path)
    start = None
    try:
        with open(p, "a", encoding="utf-8") as f:
            start = f.tell()
            if before is not None:
                before(f)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        if start is not None:
            try:
                os.truncate(p, start)
            except OSError:
                pass
        raise _refused(p, exc) from None


def write_whole(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it: readers see the
    old file or the new one, never a part."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _refused(p, exc) from None
