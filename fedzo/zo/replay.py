"""Replay: turning scalars into update-log entries, and entries into the model.

The update log is the model: ``global(r)`` is the initial weights with the log's entries
applied in order. Every party that rebuilds a model (a centralized run's resume, a
federated server, a client catching up, ``fedzo evaluate --run``) applies entries with
:func:`apply_entries`, and the server makes them from the aggregated scalars with
:func:`aggregate_entries`, so the ``lr / q`` split a client used and the one the server
replays are the same code (:func:`fedzo.zo.estimators.direction_lr`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fedzo.zo.estimators import direction_lr, direction_seeds
from fedzo.zo.log import LogEntry
from fedzo.zo.optimizers import ZOSGD, ZOOptimizer
from fedzo.zo.perturb import Perturber


def aggregate_entries(round_: int, step_seeds: Sequence[int], q: int, grads: Sequence[float], lr: float,
                      optimizer: ZOSGD) -> list[LogEntry]:
    """Log entries of a round: one per direction, moving ``optimizer``'s coefficient of the
    aggregated projected gradient (``grads`` in direction order: K steps x q)."""
    dirs = [s for step in step_seeds for s in direction_seeds(step, q)]
    lr_dir = direction_lr(lr, q)
    return [LogEntry(round_, s, (optimizer.coefficient(g, lr_dir),), g, lr_dir)
            for s, g in zip(dirs, grads, strict=True)]


def apply_entries(perturber: Perturber, entries: Iterable[LogEntry], optimizer: ZOOptimizer | None = None) -> int:
    """Apply logged entries in order, in place. Returns the number of entries applied.

    Stateless logs need no optimiser. A log written by a stateful optimiser must be
    replayed from the start with a fresh optimiser of the same kind and settings.
    """
    if optimizer is None:  # one pass over the weights where the fused kernel serves them
        moves = [(e.seed, e.alphas) for e in entries]
        perturber.apply_many(moves)
        return len(moves)
    n = 0
    for e in entries:
        optimizer.replay(perturber, e.seed, e.alphas, e.grad, e.lr)
        n += 1
    return n
