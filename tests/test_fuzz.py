"""Property tests: the scenario loader and the reply parser fail only with their own errors."""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedzo.errors import FedzoError
from fedzo.federation.wire.messages import SCHEMA_VERSION, pack_f32, seeds_digest

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = ["version", "name", "model", "task", "data", "zo", "optimizer", "runtime", "federation", "fleet", "faults",
        "num_clients", "rounds", "clients_per_round", "eps", "peft", "estimator", "batch_size",
        "participation", "local_steps", "q", "lr", "aggregator", "aggregator_clip", "clip_multiplier", "byzantine",
        "fraction", "kind", "seed", "crash_before", "dropout", "devices", "profile", "count", "catch_up",
        "seed_pool_size", "min_clients", "out", "threads", "train_examples", "bogus"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["mean", "median", "running-median", "scale",
                                                           "laptop-cpu", "seed_pool", "zo-sgd", "fo-sgd"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)),
    max_leaves=20)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@SETTINGS
@given(doc=documents)
def test_scenario_loader_raises_only_fedzo_errors_on_dicts(tmp_path_factory, doc) -> None:
    import yaml

    from fedzo.config.scenario import load_scenario

    p = tmp_path_factory.mktemp("fz") / "s.yaml"
    try:
        p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    except yaml.YAMLError:
        return
    try:
        load_scenario(p)
    except FedzoError:
        pass


@SETTINGS
@given(text=st.one_of(st.text(alphabet=string.printable + "äé\u2028", max_size=200), st.binary(max_size=120)))
def test_scenario_loader_raises_only_fedzo_errors_on_text(tmp_path_factory, text) -> None:
    from fedzo.config.scenario import load_scenario

    p = tmp_path_factory.mktemp("fz") / "s.yaml"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    try:
        load_scenario(p)
    except FedzoError:
        pass


# -- replies ---------------------------------------------------------------------------------
record_values = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True), st.text(max_size=8),
                          st.binary(max_size=48), st.booleans())
config_keys = st.sampled_from(["v", "r", "c", "s", "sd", "op", "x"])
metric_keys = st.sampled_from(["n", "lm", "ll", "t", "pm", "x"])


@st.composite
def replies(draw):
    """A RecordDict near the uplink schema: right keys with random values, or valid fields mixed in."""
    cfg = draw(st.dictionaries(config_keys, record_values, max_size=6))
    if draw(st.booleans()):
        cfg.update({"v": SCHEMA_VERSION, "r": 3, "c": 1, "sd": seeds_digest((5, 6))})
        if draw(st.booleans()):
            cfg["s"] = pack_f32(draw(st.lists(st.floats(width=32, allow_nan=True), min_size=0, max_size=3)))
    met = draw(st.dictionaries(metric_keys, st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True)),
                               max_size=6))
    return cfg, met, draw(st.booleans())


def _record(cfg, met, with_metrics):
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    out = RecordDict({"fz": ConfigRecord(cfg)})
    if with_metrics:
        try:
            out["fzm"] = MetricRecord(met)
        except (TypeError, ValueError):
            pass
    return out


@SETTINGS
@given(reply=replies())
def test_reply_parser_raises_only_message_errors(reply) -> None:
    from flwr.app import Message, RecordDict

    from fedzo.federation.server.replies import collect_replies
    from fedzo.federation.wire.bytes import ensure_task_identity
    from fedzo.federation.wire.messages import Expected, MessageError, parse_uplink

    try:
        content = _record(*reply)
    except (TypeError, ValueError):
        return  # Flower refuses to build the record itself
    expected = Expected(3, 1, (5, 6), 1)
    try:
        up = parse_uplink(content, expected)
    except MessageError:
        up = None
    ensure_task_identity()
    reply_msg = Message(content, reply_to=Message(RecordDict(), dst_node_id=9, message_type="train"))
    got = collect_replies([reply_msg], {9: 1}, lambda c, x: parse_uplink(x, expected))
    assert (1 in got.updates) == (up is not None)
    assert set(got.updates) | set(got.rejected) == {1}
    if up is not None:
        assert all(abs(s) <= expected.max_abs_scalar for s in up.scalars) and len(up.scalars) == 2


def test_parser_accepts_a_valid_reply() -> None:
    from fedzo.federation.wire.messages import Expected, Uplink, build_uplink, parse_uplink, seeds_digest

    up = Uplink(3, 1, (0.5, -0.25), seeds_digest((5, 6)), 8, 0.7, 0.6, 0.1, 1)
    assert parse_uplink(build_uplink(up), Expected(3, 1, (5, 6), 1)) == up


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])
