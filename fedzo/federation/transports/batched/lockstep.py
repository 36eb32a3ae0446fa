"""Turn-taking threads: many clients' unchanged training code, one shared loss call per turn.

A ZO client asks for the loss of its current parameters at points its estimator and
optimizer decide (two per direction for SPSA, more for ZO-SGD-Cons). To answer the
requests of a whole round's participants with one batched forward pass without
rewriting that code as coroutines, :func:`run_lockstep` runs each client's job in its
own thread, one thread at a time: a job runs until it asks for a loss (or ends), then the
next job runs; once every live job waits, ``answer`` evaluates all their requests at once
and each job continues with its own value. Only one thread ever runs, in a fixed order,
so the arithmetic of each job is exactly what it would be alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

R = TypeVar("R")  # what a job asks to have evaluated
A = TypeVar("A")  # what a request is answered with (a loss; a loss and its derivative)
T = TypeVar("T")  # what a job returns

Ask = Callable[[R], A]


class Abandoned(RuntimeError):
    """Raised inside a job whose turn's shared evaluation failed."""


def _held() -> threading.Lock:
    """A lock taken at once: a binary semaphore that another thread's release opens."""
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Slot(Generic[R, A, T]):
    # Two plain locks as binary semaphores hand the turn over: about half the cost of a pair
    # of threading.Events (which build a Condition and a new waiter lock on every wait):
    # 38-64 against 93-139 us a hand-over, 100 jobs x 8 requests, on 2 busy cores.
    go: threading.Lock = field(default_factory=_held)  # released by the driver: the job may run
    paused: threading.Lock = field(default_factory=_held)  # released by the job: it waits (or ended)
    request: R | None = None
    reply: A | BaseException | None = None
    done: bool = False
    value: T | None = None
    error: BaseException | None = None

    def ask(self, request: R) -> A:
        """Called by the job: hand over ``request``, wait for the turn's answer."""
        self.request, self.reply = request, None
        self.paused.release()
        self.go.acquire()
        reply = self.reply
        if isinstance(reply, BaseException):
            raise Abandoned(f"the shared evaluation of this turn failed: {reply}") from reply
        assert reply is not None
        return reply

    def main(self, job: Callable[[Ask[R, A]], T]) -> None:
        self.go.acquire()
        try:
            self.value = job(self.ask)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller with the job's slot
            self.error = exc
        finally:
            self.done = True
            self.paused.release()

    def resume(self) -> None:
        """Let the job run until its next request or its end."""
        self.go.release()
        self.paused.acquire()


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one job ended with: its value, or the exception it raised."""

    value: T | None
    error: BaseException | None


def run_lockstep(jobs: Sequence[Callable[[Ask[R, A]], T]],
                 answer: Callable[[list[R]], Sequence[A]]) -> tuple[list[Outcome[T]], int]:
    """Run ``jobs`` in turns; ``answer(requests)`` evaluates every waiting job's request.

    Returns each job's outcome (in order) and the number of ``answer`` calls. When
    ``answer`` raises, every waiting job gets :class:`Abandoned` from its request.
    """
    slots: list[_Slot[R, A, T]] = [_Slot() for _ in jobs]
    threads = [threading.Thread(target=s.main, args=(j,), name=f"fedzo-lockstep-{i}", daemon=True)
               for i, (s, j) in enumerate(zip(slots, jobs, strict=True))]
    for t in threads:
        t.start()
    turns = 0
    while True:
        waiting = []
        for s in slots:
            if not s.done:
                s.resume()
                if not s.done:
                    waiting.append(s)
        if not waiting:
            break
        turns += 1
        try:
            replies: Sequence[A | BaseException] = answer([s.request for s in waiting])  # type: ignore[misc]
            if len(replies) != len(waiting):
                raise RuntimeError(f"answer gave {len(replies)} values for {len(waiting)} requests")
        except Exception as exc:  # noqa: BLE001 - every waiting job learns why
            replies = [exc] * len(waiting)
        for s, rep in zip(waiting, replies, strict=True):
            s.reply = rep
    for t in threads:
        t.join()
    return [Outcome(s.value, s.error) for s in slots], turns
