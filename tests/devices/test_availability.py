"""Availability traces and models."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from fedzo.devices.availability import (
    AlwaysAvailable,
    BernoulliAvailability,
    OnlineTrace,
    TraceAvailability,
    draw_offline_time,
    trace_online_at,
)


def test_trace_intervals_half_open() -> None:
    tr = OnlineTrace(intervals=((10.0, 20.0), (30.0, 40.0)))
    assert [trace_online_at(tr, t) for t in (9.9, 10.0, 19.9, 20.0, 35.0, 40.0)] == [
        False, True, True, False, True, False
    ]


def test_periodic_trace_repeats() -> None:
    tr = OnlineTrace(intervals=((0.0, 5.0),), period=10.0)
    assert trace_online_at(tr, 103.0) and not trace_online_at(tr, 107.0)
    model = TraceAvailability(file="x.yaml", trace=tr)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    assert draw_offline_time(model, start_s=101.0, end_s=109.0, rng=rng) == pytest.approx(105.0)
    assert draw_offline_time(model, start_s=101.0, end_s=104.0, rng=rng) is None
    assert draw_offline_time(model, start_s=106.0, end_s=108.0, rng=rng) == pytest.approx(106.0)


def test_trace_validation() -> None:
    with pytest.raises(ValidationError, match="overlaps"):
        OnlineTrace(intervals=((0.0, 5.0), (4.0, 6.0)))
    with pytest.raises(ValidationError, match="within"):
        OnlineTrace(intervals=((0.0, 12.0),), period=10.0)


def test_bernoulli_rates() -> None:
    model = BernoulliAvailability(p=0.25, dropout=0.5)
    rng = np.random.default_rng(1)
    draws = [draw_offline_time(model, start_s=0.0, end_s=1.0, rng=rng) for _ in range(4000)]
    offline_at_start = sum(d == 0.0 for d in draws) / len(draws)
    mid = sum(d is not None and 0.0 < d < 1.0 for d in draws) / len(draws)
    assert offline_at_start == pytest.approx(0.75, abs=0.03)
    assert mid == pytest.approx(0.125, abs=0.02)
    assert draw_offline_time(AlwaysAvailable(), start_s=0, end_s=1, rng=rng) is None
