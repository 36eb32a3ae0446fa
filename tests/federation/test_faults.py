"""Fault injection (faults: section), Byzantine replies and running-median clipping."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fedzo.config.scenario import load_scenario
from fedzo.errors import ScenarioError
from fedzo.federation.run import run_federated
from fedzo.federation.server.aggregate import Contribution
from fedzo.federation.server.replies import collect_replies
from fedzo.federation.server.robust import RobustAggregator
from fedzo.federation.transports.faults import (
    DELIVERY_FAULTS,
    FaultsConfig,
    delivery_fault,
    fault_totals,
    is_byzantine,
    tamper,
)
from fedzo.records import parse_record
from fedzo.zo import LogEntry

EXPECTED_STATUS = {"crash_before": "failed", "crash_after": "dropped", "straggler": "dropped",
                   "dropout": "dropped", "duplicate": "ok", "stale": "excluded"}


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_fault_draw_is_deterministic_and_exclusive() -> None:
    cfg = FaultsConfig(seed=3, crash_before=0.2, crash_after=0.2, straggler=0.1, dropout=0.1, duplicate=0.1,
                       stale=0.1)
    draws = [delivery_fault(cfg, r, c) for r in range(1, 101) for c in range(20)]
    assert draws == [delivery_fault(cfg, r, c) for r in range(1, 101) for c in range(20)]
    counts = Counter(draws)
    for kind in DELIVERY_FAULTS:
        assert abs(counts[kind] / len(draws) - getattr(cfg, kind)) < 0.03, kind
    assert delivery_fault(FaultsConfig(seed=4, crash_before=0.5), 1, 1) in (None, "crash_before")
    assert not any(delivery_fault(FaultsConfig(), r, 0) for r in range(50))
    byz = FaultsConfig.model_validate({"byzantine": {"fraction": 0.2}})
    share = sum(is_byzantine(byz, r, c, 10) for r in range(100) for c in range(10)) / 1000
    assert abs(share - 0.2) < 0.04


def test_faults_section_is_validated(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("federation: {num_clients: 2}\nfaults: {crash_before: 0.7, dropout: 0.5, bogus: 1,\n"
                   "  byzantine: {kind: melt}}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(bad)
    text = str(err.value)
    assert "faults.bogus" in text and "faults.byzantine.kind" in text
    over = tmp_path / "over.yaml"
    over.write_text("faults: {crash_before: 0.7, dropout: 0.5}\n")
    with pytest.raises(ScenarioError, match="add up to 1.2"):
        load_scenario(over)
    fo = tmp_path / "fo.yaml"
    fo.write_text("optimizer: {name: fo-sgd}\nfaults: {dropout: 0.1}\n")
    with pytest.raises(ScenarioError, match="seeds-and-scalars"):
        load_scenario(fo)
    good = tmp_path / "good.yaml"
    good.write_text("faults: {seed: 2, straggler: 0.25, byzantine: {fraction: 0.2, kind: scale}}\n"
                    "federation: {aggregator: median, aggregator_clip: running-median, clip_multiplier: 4}\n")
    sc = load_scenario(good)
    assert sc.faults.straggler == 0.25 and sc.faults.byzantine.kind == "scale" and sc.faults.active
    assert sc.federation.aggregator_clip == "running-median"


def test_tamper_kinds() -> None:
    s = (0.5, -2.0, 0.0)
    assert tamper(s, "sign_flip", 1) == (-0.5, 2.0, -0.0)
    assert tamper(s, "scale", 1) == (5e5, -2e6, 0.0)
    assert all(math.isnan(x) for x in tamper(s, "nan", 1))
    assert all(math.isinf(x) for x in tamper(s, "inf", 1))
    assert tamper(s, "random", 7) == tamper(s, "random", 7) != tamper(s, "random", 8)


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory, fed_config):
    """5 clients, all in every round, 6 rounds, every delivery fault at 12%."""
    faults = dict.fromkeys(DELIVERY_FAULTS, 0.12) | {"seed": 0}
    cfg = fed_config(num_clients=5, clients_per_round=5, rounds=6).model_copy(
        update={"faults": FaultsConfig(**faults)})
    out = tmp_path_factory.mktemp("faults") / "run"
    return cfg, out, run_federated(cfg, out)


def test_each_fault_is_observed_and_counted(faulty_run) -> None:
    cfg, out, summary = faulty_run
    recs = _records(out)
    clients = [r for r in recs if r["kind"] == "client"]
    seen = Counter()
    for r in clients:
        want = delivery_fault(cfg.faults, r["round"], r["client"])
        assert r["fault"] == want
        assert r["status"] == EXPECTED_STATUS.get(want, "ok"), r
        if want == "duplicate":
            assert r["extra_replies"] == ["duplicate"]
        else:
            assert r["extra_replies"] == []
        if want == "stale":
            assert "round" in r["reason"]
        if want == "crash_before":
            assert "injected fault" in r["reason"]
        seen[want] += 1
    assert set(DELIVERY_FAULTS) <= set(seen), f"the fixture should hit every kind: {seen}"
    rounds = [r for r in recs if r["kind"] == "round" and r["round"] > 0]
    assert sum(sum(r["faults_injected"].values()) for r in rounds) == sum(
        v for k, v in seen.items() if k is not None)
    totals = summary.faults
    assert totals == fault_totals([parse_record(r) for r in recs])
    assert totals["injected"] == {k: v for k, v in seen.items() if k is not None}
    assert totals["extra_replies"] == {"duplicate": seen["duplicate"]}
    assert summary.bytes_by_kind["duplicate"][0] > 0  # surplus replies still cross the wire
    assert totals["rejected"].get("stale-round") == seen["stale"]
    assert totals["status"]["failed"] == seen["crash_before"]
    assert totals["status"]["dropped"] == seen["crash_after"] + seen["straggler"] + seen["dropout"]
    assert totals["status"]["ok"] == seen[None] + seen["duplicate"]


def test_faulty_run_resumes_bitwise(faulty_run, tmp_path, interrupt_and_resume, strip_timings) -> None:
    cfg, out, ref = faulty_run
    resumed = interrupt_and_resume(cfg, tmp_path / "cut", 4)
    assert resumed.model_sha256 == ref.model_sha256
    assert resumed.faults == ref.faults
    assert strip_timings(tmp_path / "cut") == strip_timings(out)


@pytest.mark.parametrize("kind,code", [("nan", "non-finite"), ("inf", "non-finite")])
def test_non_finite_byzantine_scalars_are_rejected(tmp_path, fed_config, kind, code) -> None:
    cfg = fed_config(num_clients=4, clients_per_round=4, rounds=2).model_copy(
        update={"faults": FaultsConfig.model_validate({"seed": 1, "byzantine": {"fraction": 0.5, "kind": kind}})})
    run_federated(cfg, tmp_path / kind)
    clients = [r for r in _records(tmp_path / kind) if r["kind"] == "client"]
    byz = [r for r in clients if is_byzantine(cfg.faults, r["round"], r["client"], cfg.federation.num_clients)]
    assert byz and all(r["status"] == "excluded" and r["fault"] == f"byzantine:{kind}" for r in byz)
    rounds = [r for r in _records(tmp_path / kind) if r["kind"] == "round" and r["round"] > 0]
    assert sum(Counter(r["rejected"].values())[code] for r in rounds) == len(byz)


def _contribs(rows: list[list[float]]) -> list[Contribution]:
    return [Contribution(i, 8, tuple(r)) for i, r in enumerate(rows)]


def test_running_median_clip_bounds_and_state() -> None:
    agg = RobustAggregator("mean", mode="running-median", multiplier=2.0, window=2)
    honest = [[1.0, -1.0], [1.0, -1.0], [1.0, -1.0], [1.0, -1.0]]
    # first round: the reference is the median |scalar| of the round itself (1.0) -> bound 2
    out = agg(_contribs(honest + [[1e6, -1e6]]))
    assert agg.last_bound == 2.0 and agg.clipped == 2
    assert out == pytest.approx(((4 + 2) / 5, -(4 + 2) / 5))
    agg.observe([LogEntry(1, 1, (0.0,), 0.5), LogEntry(1, 2, (0.0,), -0.5)])
    agg.observe([])  # a skipped round leaves the state alone
    agg(_contribs(honest))
    assert agg.last_bound == 1.0
    agg.observe([LogEntry(2, 1, (0.0,), 3.0)])
    agg.observe([LogEntry(3, 1, (0.0,), 5.0)])  # window 2: round 1 falls out
    agg(_contribs(honest))
    assert agg.last_bound == 8.0
    # the state is a function of the logged rounds only: a fresh aggregator fed the same log agrees
    again = RobustAggregator("mean", mode="running-median", multiplier=2.0, window=2)
    for e in ([LogEntry(1, 1, (0.0,), 0.5)], [LogEntry(2, 1, (0.0,), 3.0)], [LogEntry(3, 1, (0.0,), 5.0)]):
        again.observe(e)
    again(_contribs(honest))
    assert again.last_bound == agg.last_bound
    plain = RobustAggregator("median")
    assert plain(_contribs(honest + [[1e6, -1e6]])) == (1.0, -1.0) and plain.last_bound is None


def test_running_median_clip_run_resumes_bitwise(tmp_path, interrupt_and_resume, fed_config, strip_timings) -> None:
    cfg = fed_config(num_clients=4, clients_per_round=4, rounds=4, aggregator_clip="running-median",
                     clip_multiplier=2.0, clip_window=2).model_copy(
        update={"faults": FaultsConfig.model_validate({"seed": 2, "byzantine": {"fraction": 0.25, "kind": "scale"}})})
    ref = run_federated(cfg, tmp_path / "ref")
    assert interrupt_and_resume(cfg, tmp_path / "cut", 3).model_sha256 == ref.model_sha256
    assert strip_timings(tmp_path / "cut") == strip_timings(tmp_path / "ref")


def test_collect_replies_prefers_the_valid_reply() -> None:
    from flwr.app import Error, Message

    from fedzo.federation.transports.faults import _with_config
    from fedzo.federation.wire.bytes import ensure_task_identity
    from fedzo.federation.wire.messages import Expected, Uplink, build_uplink, parse_uplink, seeds_digest

    ensure_task_identity()
    seeds = (11, 12)
    good = build_uplink(Uplink(3, 0, (0.1, 0.2), seeds_digest(seeds), 8, 0.7, 0.7, 0.1, 1))
    down = Message(good, dst_node_id=77, message_type="train", group_id="3")
    other = Message(good, dst_node_id=99, message_type="train", group_id="3")
    replies = [Message(_with_config(good, r=2), reply_to=down), Message(good, reply_to=down),
               Message(good, reply_to=down), Message(good, reply_to=other),
               Message(Error(code=1, reason="x"), reply_to=down)]
    col = collect_replies(replies, {77: 0}, lambda c, content: parse_uplink(content, Expected(3, 0, seeds, 1)))
    assert col.messages[0] is replies[1] and col.updates[0].scalars == pytest.approx((0.1, 0.2))
    assert col.extras == {0: ["stale-round", "duplicate", "failed"]} and col.unknown == 1
    assert np.isfinite(col.messages[0].content.config_records["fz"]["r"])
