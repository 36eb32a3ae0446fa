"""Aggregation: pure functions on hand-made replies (no network)."""

from __future__ import annotations

import pytest
from flwr.app import Error, Message, RecordDict

from fedzo.errors import ConfigError
from fedzo.federation.server.aggregate import Contribution, make_aggregator, median, trimmed_mean, weighted_mean
from fedzo.federation.server.replies import collect_replies
from fedzo.federation.wire.bytes import ensure_task_identity
from fedzo.federation.wire.messages import Expected, Uplink, build_uplink, parse_uplink, seeds_digest


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
    with pytest.raises(ConfigError, match="federation.aggregator: 'mode'.*allowed: mean, median, trimmed-mean"):
        make_aggregator("mode")


def test_collect_replies_picks_one_per_client_and_counts_bad_ones() -> None:
    ensure_task_identity()
    seeds = (11, 12)

    def up(c: int, scalars: tuple[float, ...]) -> RecordDict:
        return build_uplink(Uplink(4, c, scalars, seeds_digest(seeds), 8, 0.5, 0.5, 0.1, 1))

    sent = {c: Message(RecordDict(), dst_node_id=100 + c, message_type="train") for c in range(3)}

    def reply(c: int, content: RecordDict | Error) -> Message:
        return Message(content, reply_to=sent[c])  # from node 100 + c

    replies = [reply(0, up(0, (1.0, 2.0))), reply(1, up(1, (1.0,))), reply(2, Error(code=1, reason="boom")),
               reply(0, up(0, (1.0, 2.0)))]
    got = collect_replies(replies, {100 + c: c for c in range(3)},
                          lambda c, content: parse_uplink(content, Expected(4, c, seeds, 1)))
    assert list(got.updates) == [0] and got.updates[0].scalars == (1.0, 2.0)
    assert got.rejected == {1: "scalar-count", 2: "failed"}
    assert got.extras == {0: ["duplicate"]}
