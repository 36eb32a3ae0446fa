"""Aggregation: pure functions on hand-made replies (no network)."""

from __future__ import annotations

import pytest

from fedzo.errors import ConfigError
from fedzo.federation.aggregate import (
    Contribution, make_aggregator, median, trimmed_mean, validate_replies, weighted_mean,
)
from fedzo.federation.messages import Expected, Uplink, build_uplink, seeds_digest


def test_weighted_mean_weights_by_examples_and_ignores_order() -> None:
    a, b = Contribution(1, 1, (1.0, 0.0)), Contribution(0, 3, (5.0, 4.0))
    assert weighted_mean([a, b]) == weighted_mean([b, a]) == (4.0, 3.0)


def test_median_and_trimmed_mean_resist_an_outlier() -> None:
    cs = [Contribution(i, 1, (v,)) for i, v in enumerate([1.0, 2.0, 3.0, 4.0, 1000.0])]
    assert median(cs) == (3.0,)
    assert trimmed_mean(cs, 0.2) == (3.0,)
    assert weighted_mean(cs)[0] > 100


def test_clip_bounds_each_scalar() -> None:
    cs = [Contribution(0, 1, (10.0,)), Contribution(1, 1, (-2.0,))]
    assert make_aggregator("mean", clip=1.0)(cs) == (0.0,)


def test_unknown_aggregator_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="mean, median, trimmed-mean"):
        make_aggregator("mode")


def test_validate_replies_counts_bad_ones() -> None:
    seeds = (11, 12)
    exp = {c: Expected(4, c, seeds, 1) for c in range(3)}

    def up(c: int, scalars: tuple[float, ...]) -> Uplink:
        return Uplink(4, c, scalars, seeds_digest(seeds), 8, 0.5, 0.5, 0.1, 1)

    check = validate_replies({0: build_uplink(up(0, (1.0, 2.0))), 1: build_uplink(up(1, (1.0,))),
                              2: RuntimeError("boom")}, exp)
    assert list(check.uplinks) == [0]
    assert check.rejected == {1: "scalar-count", 2: "failed"}
    assert check.contributions()[0].scalars == (1.0, 2.0)
