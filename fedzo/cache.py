"""Where fedzo keeps what it downloads or builds: the user cache folder.

Standard library only, so the pure ZO core (:mod:`fedzo.zo.native_lanes`, which builds its C
kernel there) may use it as the asset code does.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``cache_dir`` if given, else ``$FEDZO_CACHE``, else the user cache."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("FEDZO_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fedzo"
