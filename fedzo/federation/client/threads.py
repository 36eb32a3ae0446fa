"""How many torch CPU threads a client process runs.

``runtime.threads`` sets a process's torch threads. In the simulation engine each client
runs in a Ray actor that Ray reserved ``federation.simulation.num_cpus`` CPUs for, and
``max_concurrent`` such actors run at once beside the driver. Were every actor to start
``runtime.threads`` threads, the host would carry more busy threads than cores, and
PyTorch's OpenMP threads, which spin after each parallel region, would then spend the
cores waiting on one another (measured by ``analysis/experiments/omp_wait.py``). So a
client in a Ray actor runs at most the CPUs reserved for it (and at least one thread).
Outside Ray (in-process and batched engines, a SuperNode on a board) the setting stands.
"""

from __future__ import annotations

import math
import sys


def reserved_cpus() -> float | None:
    """CPUs Ray reserved for this process when it is a Ray worker; None outside one (no
    Ray loaded, Ray not started, or this process is Ray's driver)."""
    ray = sys.modules.get("ray")  # never imported here: a board's SuperNode has no Ray
    if ray is None or not ray.is_initialized():
        return None
    try:
        resources = ray.get_runtime_context().get_assigned_resources()
    except AssertionError:  # Ray asserts that the caller is a worker: this is the driver
        return None
    cpus = resources.get("CPU")
    return float(cpus) if cpus else None


def client_threads(requested: int | None, reserved: float | None) -> int | None:
    """Torch threads for a client: ``requested`` (``runtime.threads``; None: torch's
    default), capped at ``reserved`` CPUs (rounded down, at least one) when Ray reserved
    some for it."""
    if reserved is None:
        return requested
    cap = max(1, math.floor(reserved))
    return cap if requested is None else min(requested, cap)
