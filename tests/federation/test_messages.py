"""Message schema: round trips and named errors for every kind of bad reply."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ConfigRecord

from fedzo.federation.wire.messages import (
    CONFIG_KEY,
    CatchUp,
    Downlink,
    ExampleCountError,
    Expected,
    MessageError,
    NonFiniteScalarError,
    ScalarBoundError,
    ScalarCountError,
    SchemaVersionError,
    StaleRoundError,
    UnknownSeedsError,
    Uplink,
    build_downlink,
    build_setup_reply,
    build_uplink,
    parse_downlink,
    parse_setup_reply,
    parse_uplink,
    seeds_digest,
)

SEEDS = (1, 2**63 - 1, 12345)


def _uplink(**over) -> Uplink:
    base = {"round": 3, "client": 2, "scalars": (0.5, -1.25, 3.0), "seeds_digest": seeds_digest(SEEDS),
                "num_examples": 48, "loss_mean": 0.7, "loss_last": 0.6, "compute_seconds": 0.1, "peak_memory_bytes": 10}
    return Uplink(**{**base, **over})


EXP = Expected(round=3, client=2, seeds=SEEDS, q=1, max_abs_scalar=100.0)


def test_downlink_round_trip_with_replay_catch_up() -> None:
    d = Downlink("train", 3, 2, SEEDS, 1e-3, 1e-3, 1,
                 CatchUp("replay", 1, 2, (7, 8), (0.1, -1e-300)), config_digest="abc")
    assert parse_downlink(build_downlink(d)) == d


def test_downlink_full_catch_up_carries_weights_exactly() -> None:
    w = {"a.weight": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)}
    d = Downlink("train", 1, 0, (5,), 0.1, 0.01, 1, CatchUp("full", 0, 0, weights=w))
    got = parse_downlink(build_downlink(d)).catch_up.weights
    assert got is not None and np.array_equal(got["a.weight"], w["a.weight"])


def test_setup_round_trip() -> None:
    d = Downlink("setup", 0, -1, config_json='{"x": 1}', config_digest="d")
    assert parse_downlink(build_downlink(d)) == d
    assert parse_setup_reply(build_setup_reply(7)) == 7


def test_uplink_round_trip_is_float32_exact() -> None:
    assert parse_uplink(build_uplink(_uplink()), EXP) == _uplink()


@pytest.mark.parametrize(("over", "exp", "error"), [
    ({"scalars": (1.0, 2.0)}, EXP, ScalarCountError),
    ({"scalars": (1.0, math.nan, 0.0)}, EXP, NonFiniteScalarError),
    ({"scalars": (1.0, math.inf, 0.0)}, EXP, NonFiniteScalarError),
    ({"scalars": (1.0, 1e5, 0.0)}, EXP, ScalarBoundError),
    ({"seeds_digest": seeds_digest((1, 2, 3))}, EXP, UnknownSeedsError),
    ({"round": 2}, EXP, StaleRoundError),
    ({"loss_mean": math.nan}, EXP, NonFiniteScalarError),
])
def test_bad_replies_raise_named_errors(over, exp, error) -> None:
    with pytest.raises(error) as info:
        parse_uplink(build_uplink(_uplink(**over)), exp)
    assert info.value.code != "malformed"


def test_wrong_schema_version_is_refused() -> None:
    rd = build_uplink(_uplink())
    rd[CONFIG_KEY] = ConfigRecord({**dict(rd.config_records[CONFIG_KEY]), "v": 99})
    with pytest.raises(SchemaVersionError, match="version 99"):
        parse_uplink(rd, EXP)


def test_seed_out_of_range_is_refused() -> None:
    with pytest.raises(MessageError, match="2\\^63"):
        build_downlink(Downlink("train", 1, 0, (2**63,), 0.1, 0.1, 1))


def test_a_claimed_example_count_must_be_the_servers() -> None:
    exp = Expected(round=3, client=2, seeds=SEEDS, q=1, max_abs_scalar=100.0, examples=48)
    assert parse_uplink(build_uplink(_uplink()), exp).num_examples == 48
    with pytest.raises(ExampleCountError, match="reports 1000000000 examples; the server gave it 48"):
        parse_uplink(build_uplink(_uplink(num_examples=10**9)), exp)


def test_the_scalar_count_is_checked_before_unpacking(monkeypatch) -> None:
    from fedzo.federation.wire import messages

    huge = build_uplink(_uplink(scalars=tuple(float(i) for i in range(10**6))))

    def unpacked(*_: object, **__: object) -> None:
        raise AssertionError("a reply of the wrong length was unpacked")

    monkeypatch.setattr(messages, "unpack_f32", unpacked)
    with pytest.raises(ScalarCountError, match="4000000 bytes of scalars .* expected 3"):
        parse_uplink(huge, EXP)
