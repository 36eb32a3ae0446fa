"""A node's synced model on disk: what a real board keeps between rounds.

Under the deployment engine every message starts a fresh client-app process, and the
server's update log lives on another machine. So the node saves its clean synced
trainable tensors (``global(r)`` for the round ``r`` it last reached) to
``<base>/p<partition-id>/run-<run-id>/synced.safetensors``, with the round and the run
configuration's digest in the file's metadata; the next message restores them and
applies its catch-up (replay entries, seed-pool totals or full weights) from there.

One file per node and run, replaced atomically (bounded disk: one copy of the trainable
tensors); caches of the node's earlier runs are removed when a run starts. Beside it the
node keeps the run configuration it received in the handshake (``setup.json``), so a
SuperNode restarted mid-run under the same node id (SuperNode authentication) can serve
the run's next message without a new handshake.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from fedzo.errors import FedzoError

CACHE_ENV = "FEDZO_NODE_CACHE"
CACHE_NODE_CONFIG_KEY = "cache-dir"
FILE = "synced.safetensors"
SETUP_FILE = "setup.json"


class NodeCacheError(FedzoError):
    """The node cache cannot be read or written."""


def default_base(node_config: dict[str, object]) -> Path:
    """Where node caches live: node config ``cache-dir``, else ``$FEDZO_NODE_CACHE``, else
    ``~/.cache/fedzo/nodes``."""
    given = node_config.get(CACHE_NODE_CONFIG_KEY) or os.environ.get(CACHE_ENV)
    return Path(str(given)).expanduser() if given else Path.home() / ".cache" / "fedzo" / "nodes"


@dataclass(frozen=True)
class CachedModel:
    """Trainable tensors of ``global(round)`` for the configuration ``digest``."""

    round: int
    digest: str
    tensors: dict[str, torch.Tensor]


class NodeCache:
    """The on-disk synced model of one node in one run."""

    def __init__(self, base: str | os.PathLike[str], partition_id: int, run_id: int) -> None:
        self.node_dir = Path(base) / f"p{int(partition_id)}"
        self.dir = self.node_dir / f"run-{int(run_id)}"
        self.path = self.dir / FILE
        self.setup_path = self.dir / SETUP_FILE

    def start_run(self) -> None:
        """Remove the caches this node kept for other runs (called at the handshake)."""
        if self.node_dir.is_dir():
            for old in self.node_dir.glob("run-*"):
                if old != self.dir:
                    shutil.rmtree(old, ignore_errors=True)

    def save_setup(self, setup_json: str) -> None:
        """Keep the run configuration received in the handshake (atomically)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.setup_path.with_suffix(".tmp")
        try:
            tmp.write_text(setup_json, encoding="utf-8")
            os.replace(tmp, self.setup_path)
        except OSError as exc:
            raise NodeCacheError(f"{self.setup_path}: cannot write the node's run configuration ({exc})") from exc

    def load_setup(self) -> str | None:
        """The run configuration kept by :meth:`save_setup`, or None."""
        try:
            return self.setup_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise NodeCacheError(f"{self.setup_path}: unreadable ({exc}); delete it to start over") from exc

    def load(self, digest: str) -> CachedModel | None:
        """The cached model, or None when there is none for this configuration."""
        if not self.path.is_file():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("digest") != digest:
                    return None
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except Exception as exc:  # a torn or foreign file
            raise NodeCacheError(f"{self.path}: unreadable node cache ({exc}); delete it to start over") from exc
        return CachedModel(int(meta["round"]), digest, tensors)

    def save(self, round_: int, digest: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write ``global(round_)`` atomically (temporary file, then rename)."""
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                      metadata={"round": str(int(round_)), "digest": digest})
            os.replace(tmp, self.path)
        except OSError as exc:
            raise NodeCacheError(f"{self.path}: cannot write the node cache ({exc})") from exc
