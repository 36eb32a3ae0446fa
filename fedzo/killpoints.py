"""Named kill points: places where a test makes the process SIGKILL itself.

A resume is only as good as the worst moment a run can die at. Each call of
:func:`kill_point` marks such a moment. With ``FEDZO_KILL_AT=NAME@N`` in the environment
the process kills itself (SIGKILL: no cleanup, no flush, no ``finally``) when it reaches
point ``NAME`` in round ``N`` (points without a round: the N-th time it is reached).
Without the variable a kill point costs one dictionary lookup. ``*-torn`` points write
part of a line before dying, as a kill in the middle of a write would. In-process,
``with interrupt_at(NAME, N):`` makes the point raise :class:`Interrupted` instead (a
``BaseException``, as Ctrl-C's ``KeyboardInterrupt``), for benches that stop and resume a
run without a fresh process.

``tests/federation/test_killpoints.py`` kills a run at every point of :data:`POINTS`
(a subset in the default run), resumes it, and checks the result is bitwise the
uninterrupted run's with no record lost or duplicated. Standard library only, so the
pure ZO core may call it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn, TextIO

ENV = "FEDZO_KILL_AT"

# name: where it is; "zo"/"fedavg" points exist only in that protocol
POINTS: dict[str, str] = {
    "handshake-done": "engine: after the setup handshake, before the fleet record",
    "client-setup-stored": "client: the run configuration stored (context and node cache), the reply not yet sent",
    "fleet-recorded": "engine: the fleet record and memory frontier written, the initial model not yet evaluated",
    "round0-evaluated": "engine: the initial model evaluated, its record not yet written",
    "round-start": "engine: a round begins",
    "client-caught-up": "client: the clean copy caught up, before local training",
    "client-trained": "client: local training done, the reply not yet sent",
    "downlinks-built": "engine: the round's messages built (catch-ups planned), none sent",
    "replies-in": "engine: every reply of the round received, nothing committed",
    "zo-log-torn": "zo: half of the round's update-log line written",
    "zo-log-appended": "zo: the round in the update log, not yet applied to the model",
    "zo-model-applied": "zo: the round applied to the global model, the clients' syncs not yet marked",
    "fedavg-aggregated": "fedavg: the new global weights in memory only",
    "committed": "engine: the protocol committed the round (log appended / weights averaged)",
    "evaluating": "engine: the round's evaluation about to run",
    "evaluated": "engine: the round evaluated, its records not yet written",
    "metrics-torn": "run directory: half of the round's metric lines written",
    "metrics-appended": "engine: the round's records written, the protocol not yet checkpointed",
    "fedavg-checkpoint-written": "fedavg: new weights in the temporary file, not yet renamed",
    "checkpointed": "engine: the round fully durable",
    "summary-temp-written": "run directory: summary.json's temporary file written, not yet renamed",
}
_reached: Counter[str] = Counter()
_interrupt: tuple[str, int | None] | None = None  # set by interrupt_at


class Interrupted(BaseException):
    """Raised at the kill point armed by :func:`interrupt_at` (as Ctrl-C would stop the run)."""


@contextmanager
def interrupt_at(name: str, round_: int | None = None) -> Iterator[None]:
    """Within the block, reaching kill point ``name`` (in round ``round_``; None: any)
    raises :class:`Interrupted` in this process."""
    global _interrupt
    if name not in POINTS:
        raise ValueError(f"unknown kill point {name!r}; known: {', '.join(POINTS)}")
    before, _interrupt = _interrupt, (name, round_)
    try:
        yield
    finally:
        _interrupt = before


def armed(name: str, round_: int | None = None) -> bool:
    """True when ``FEDZO_KILL_AT`` names this point and round (or occurrence)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    want, _, at = spec.partition("@")
    if want != name:
        return False
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown kill point {name!r}; known: {', '.join(POINTS)}")
    _reached[name] += 1
    n = round_ if round_ is not None else _reached[name]
    return not at or n == int(at)


def die() -> NoReturn:
    """SIGKILL this process (nothing after it runs)."""
    os.kill(os.getpid(), signal.SIGKILL)
    raise SystemExit(137)  # not reached: SIGKILL cannot be caught


def kill_point(name: str, round_: int | None = None) -> None:
    """Die here when ``FEDZO_KILL_AT`` names this point (see the module docstring); raise
    :class:`Interrupted` when :func:`interrupt_at` armed it."""
    if _interrupt is not None and _interrupt[0] == name and _interrupt[1] in (None, round_):
        raise Interrupted(f"{name}@{round_}")
    if armed(name, round_):
        die()


def write_torn(name: str, round_: int | None, fh: TextIO, text: str) -> None:
    """At an armed ``*-torn`` point, write half of ``text`` to the open file ``fh``, flush and
    die; otherwise write nothing."""
    if armed(name, round_):
        fh.write(text[: max(1, len(text) // 2)])
        fh.flush()
        die()
