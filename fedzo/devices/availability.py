"""Availability models: when is a device online, in *simulated* seconds.

Three kinds, chosen per profile by ``availability.kind``:

- ``always``: online for the whole simulation;
- ``bernoulli``: at the start of each round the device is online with probability ``p``;
  an online device goes offline during the round with probability ``dropout`` (at a
  uniformly drawn moment of its work);
- ``trace``: a file of online intervals ``[start, end)`` in simulated seconds, optionally
  repeating with ``period`` (e.g. 86400 for a daily pattern).

Randomness comes only from the ``numpy.random.Generator`` passed in; use
:func:`client_rng` to derive one per (seed, round, client) so results do not depend on
the order in which clients are visited.
"""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AlwaysAvailable(BaseModel):
    """Online all the time."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["always"] = "always"


class BernoulliAvailability(BaseModel):
    """Online at a round's start with probability ``p``; drops mid-round with ``dropout``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["bernoulli"] = "bernoulli"
    p: float = Field(gt=0.0, le=1.0)
    dropout: float = Field(default=0.0, ge=0.0, le=1.0)


class OnlineTrace(BaseModel):
    """Sorted, non-overlapping online intervals in simulated seconds (optionally periodic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    intervals: tuple[tuple[float, float], ...]
    period: float | None = Field(default=None, gt=0.0)

    @field_validator("intervals")
    @classmethod
    def _sorted_disjoint(
        cls, v: tuple[tuple[float, float], ...]
    ) -> tuple[tuple[float, float], ...]:
        prev_end = float("-inf")
        for start, end in v:
            if not start < end:
                raise ValueError(f"interval [{start}, {end}] must have start < end")
            if start < prev_end:
                raise ValueError(f"interval [{start}, {end}] overlaps or precedes the previous one")
            prev_end = end
        return v

    @model_validator(mode="after")
    def _within_period(self) -> OnlineTrace:
        if (
            self.period is not None
            and self.intervals
            and (self.intervals[0][0] < 0 or self.intervals[-1][1] > self.period)
        ):
            raise ValueError(f"intervals must lie within [0, period={self.period}]")
        return self


class TraceAvailability(BaseModel):
    """Online during the intervals of a trace file (YAML: ``intervals``, optional ``period``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["trace"] = "trace"
    file: Path
    trace: OnlineTrace | None = None  # filled in by the profile loader


Availability = Annotated[
    AlwaysAvailable | BernoulliAvailability | TraceAvailability, Field(discriminator="kind")
]


def load_trace(path: Path) -> OnlineTrace:
    """Read a trace file; raises ``ValueError``/``OSError`` (the loader adds the file name)."""
    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict):
        # ValueError, not TypeError: the profile loader reports it with the file name.
        raise ValueError(  # noqa: TRY004
            "a trace file must be a mapping with 'intervals' (and optional 'period')"
        )
    return OnlineTrace.model_validate(data)


def client_rng(seed: int, round_idx: int, client_idx: int) -> np.random.Generator:
    """An independent generator for one (run seed, round, client): order-independent draws."""
    return np.random.default_rng([seed, round_idx, client_idx])


def _trace_interval_at(trace: OnlineTrace, t: float) -> tuple[float, float] | None:
    """The absolute online interval containing ``t``, or None when offline at ``t``."""
    offset = 0.0
    local = t
    if trace.period is not None:
        offset = (t // trace.period) * trace.period
        local = t - offset
    starts = [s for s, _ in trace.intervals]
    i = bisect.bisect_right(starts, local) - 1
    if i < 0:
        return None
    start, end = trace.intervals[i]
    if not start <= local < end:
        return None
    abs_end = offset + end
    # A periodic interval ending at the period may continue into the next period's first one.
    if trace.period is not None and end == trace.period and trace.intervals[0][0] == 0.0:
        first_end = trace.intervals[0][1]
        abs_end = offset + trace.period + first_end if first_end < trace.period else float("inf")
    return offset + start, abs_end


def trace_online_at(trace: OnlineTrace, t: float) -> bool:
    """Whether the trace has the device online at simulated time ``t``."""
    return _trace_interval_at(trace, t) is not None


def draw_offline_time(
    model: AlwaysAvailable | BernoulliAvailability | TraceAvailability,
    *,
    start_s: float,
    end_s: float,
    rng: np.random.Generator,
) -> float | None:
    """When the device is offline during ``[start_s, end_s)``.

    Returns None if it stays online throughout, ``start_s`` if it is offline when the round
    starts, or the moment it goes offline. Consumes ``rng`` only for the bernoulli model.
    """
    if isinstance(model, AlwaysAvailable):
        return None
    if isinstance(model, BernoulliAvailability):
        online = rng.random() < model.p
        drops = rng.random() < model.dropout
        when = rng.random()
        if not online:
            return start_s
        return start_s + when * (end_s - start_s) if drops else None
    if model.trace is None:
        raise ValueError(f"trace {model.file} was not loaded")
    interval = _trace_interval_at(model.trace, start_s)
    if interval is None:
        return start_s
    return interval[1] if interval[1] < end_s else None
