"""The run's update log for simulation workers on other machines (a Ray cluster).

In Flower's simulation engine a virtual client is not tied to a worker: any Ray actor, on
any node of the cluster, may serve it in a round. A worker that serves a client whose
model it does not hold re-syncs from the update log. On one machine it reads the driver's
log file. Attached to a cluster it cannot assume that file is there, so the driver starts
a small Ray actor, pinned to its own node, that hands out the log's text, and the setup
names the actor instead of the path (``ray-actor:NAME``). This is host-side plumbing: the
simulated clients' messages, and so the bytes fedzo counts, are the same either way.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from fedzo.errors import FedzoError

__all__ = ["ACTOR_PREFIX", "log_lines", "new_actor_ref", "serve_log"]

ACTOR_PREFIX = "ray-actor:"


def new_actor_ref() -> str:
    """A fresh reference (``ray-actor:NAME``) for :func:`serve_log` to serve under."""
    return f"{ACTOR_PREFIX}fedzo-update-log-{uuid.uuid4().hex[:12]}"


def serve_log(ref: str, path: str | Path, ray_timeout: float = 600.0) -> Any:
    """Start the actor named by ``ref`` on this process's Ray node, serving the file at
    ``path``; keep the returned handle for as long as workers may ask.

    Flower's simulation backend connects to Ray in its own thread while the ServerApp
    starts, so this waits up to ``ray_timeout`` seconds for that connection rather than
    making a second one.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    deadline = time.monotonic() + ray_timeout
    while not ray.is_initialized():
        if time.monotonic() > deadline:
            raise FedzoError(f"Ray did not start within {ray_timeout:.0f} s; the update log cannot be served")
        time.sleep(0.1)

    @ray.remote(num_cpus=0)
    class UpdateLogServer:
        def __init__(self, path: str) -> None:
            self.path = path

        def read(self) -> str:
            return Path(self.path).read_text(encoding="utf-8")

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    actor = UpdateLogServer.options(name=ref.removeprefix(ACTOR_PREFIX), scheduling_strategy=here)  # type: ignore[attr-defined]
    return actor.remote(str(path))


def log_lines(ref: str) -> list[str]:
    """The update log's lines from a file path, or from the actor a ``ray-actor:`` ref names."""
    if not ref.startswith(ACTOR_PREFIX):
        return Path(ref).read_text(encoding="utf-8").splitlines()
    import ray

    server = ray.get_actor(ref.removeprefix(ACTOR_PREFIX))
    return str(ray.get(server.read.remote())).splitlines()
