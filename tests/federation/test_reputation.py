"""Persistent Byzantine clients, per-client reputation and norm clipping."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fedzo.config.faults import FaultsConfig
from fedzo.errors import ScenarioError
from fedzo.federation.run import run_federated
from fedzo.federation.server.aggregate import Contribution
from fedzo.federation.server.reputation import Reputation, round_votes, votes_from_json, votes_to_json
from fedzo.federation.server.robust import RobustAggregator
from fedzo.federation.transports.faults import is_byzantine, persistent_attackers
from fedzo.zo import LogEntry, UpdateLog

HONEST = [[1.0, -2.0, 0.5], [1.5, -1.0, 0.2], [0.8, -1.5, 0.9], [1.2, -0.7, 0.4], [0.9, -1.1, 0.6]]


def _contribs(rows: list[list[float]]) -> list[Contribution]:
    return [Contribution(i, 8, tuple(r)) for i, r in enumerate(rows)]


def test_persistent_attackers_are_the_same_every_round_and_exactly_the_fraction() -> None:
    cfg = FaultsConfig.model_validate({"seed": 5, "byzantine": {"fraction": 0.2, "persistent": True}})
    bad = persistent_attackers(cfg, 20)
    assert len(bad) == 4 and bad == persistent_attackers(cfg, 20)
    for r in range(1, 30):
        assert {c for c in range(20) if is_byzantine(cfg, r, c, 20)} == bad
    other = FaultsConfig.model_validate({"seed": 6, "byzantine": {"fraction": 0.2, "persistent": True}})
    assert persistent_attackers(other, 20) != bad  # the faults seed draws them
    redrawn = FaultsConfig.model_validate({"seed": 5, "byzantine": {"fraction": 0.2}})
    per_round = [frozenset(c for c in range(20) if is_byzantine(redrawn, r, c, 20)) for r in range(1, 6)]
    assert len(set(per_round)) > 1  # without persistent: re-drawn per round


def test_votes_reward_agreement_and_punish_a_flip() -> None:
    rows = [*HONEST, [-x for x in HONEST[0]]]  # client 5 flips client 0's scalars
    votes = round_votes(_contribs(rows))
    assert set(votes) == set(range(6))
    assert all(votes[c][0] > 0 for c in range(5)) and votes[5][0] < 0
    assert votes[5][1] > 0  # its weight: how clearly the others agree
    assert abs(votes[5][2]) < 1.0  # same scale as the others: log ratio near 0
    loud = round_votes(_contribs([*HONEST, [50 * x for x in HONEST[2]]]))
    assert loud[5][2] > 3.0 and loud[5][0] > 0  # 50x the others' norm, though pointing the same way
    assert round_votes(_contribs(HONEST[:2])) == {}  # too few to hold a consensus
    assert votes_from_json(json.loads(json.dumps(votes_to_json(votes)))) == votes  # exact through JSON


def test_reputation_leaves_out_low_scores_and_loud_clients_but_never_everyone() -> None:
    rep = Reputation(threshold=-1.0, max_scale=3.0)
    assert rep.distrusted([0, 1]) == []  # nobody has votes yet
    rep.observe({0: (3.0, 4.0, 0.1), 1: (-4.0, 4.0, -0.2), 2: (0.0, 0.0, 0.0), 3: (-1.0, 4.0, 0.0),
                 4: (1.0, 4.0, 2.0)})
    assert rep.score(0) == pytest.approx(1.5) and rep.score(1) == pytest.approx(-2.0) and rep.score(2) == 0.0
    assert rep.score(3) == pytest.approx(-0.5)  # below chance, but not confidently against the others: kept
    assert rep.scale(4) == pytest.approx(math.exp(2.0))  # e^2 = 7.4x the others' norm
    assert rep.distrusted([0, 1, 2, 3, 4, 5]) == [1, 4]
    rep.observe({4: (1.0, 4.0, 0.0)})  # the scale is a mean over rounds: e^1 = 2.7x
    assert rep.distrusted([0, 4]) == []
    assert rep.distrusted([1]) == []  # leaving out every client would stop training: keep them


def test_aggregator_with_reputation_drops_the_distrusted_and_counts_their_votes() -> None:
    agg = RobustAggregator("mean", reputation=Reputation(threshold=0.0))
    rows = [*HONEST, [-x for x in HONEST[1]]]
    first = agg(_contribs(rows))
    assert agg.left_out == [] and first == pytest.approx(tuple(sum(col) / 6 for col in zip(*rows, strict=True)))
    agg.observe([LogEntry(1, 1, (0.0,), 0.1)], agg.votes)
    second = agg(_contribs(rows))
    assert agg.left_out == [5] and 5 in agg.votes  # still scored, so it could recover
    assert second == pytest.approx(tuple(sum(col) / 5 for col in zip(*HONEST, strict=True)))


def test_norm_clip_scales_only_the_outsized_clients() -> None:
    agg = RobustAggregator("mean", mode="norm", multiplier=2.0)
    rows = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [300.0, 400.0]]
    out = agg(_contribs(rows))
    assert agg.last_bound == pytest.approx(2.0) and agg.clipped == 1  # median norm 1, x 2
    assert out == pytest.approx(((1.0 + 0.6 + 1.2) / 4, (1.0 + 0.8 + 1.6) / 4))


def test_update_log_keeps_round_meta_through_load_and_truncate(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    log = UpdateLog.create({"x": 1}, path)
    log.append_round(1, [LogEntry(1, 7, (0.5,), 1.0, 0.1)], {"reputation": {"0": [1.25, 2.0, 0.5]}})
    log.append_round(2, [LogEntry(2, 8, (0.25,), 1.0, 0.1)])
    loaded, report = UpdateLog.load(path)
    assert report.bad_line is None and loaded.meta == {1: {"reputation": {"0": [1.25, 2.0, 0.5]}}}
    loaded.truncate(1)
    again, _ = UpdateLog.load(path)
    assert again.meta == loaded.meta and again.last_round == 1


def _attacked(fed_config, **fed):  # type: ignore[no-untyped-def]
    """10 clients, all in each of 4 rounds of K = 4 steps, batches of 32 (less minibatch noise
    per scalar than the default 8, so 16 scalars per client hold a usable signal); the
    same 2 clients flip their scalars in every round."""
    cfg = fed_config(num_clients=10, clients_per_round=10, rounds=4, local_steps=4, reputation=True, **fed)
    faults = FaultsConfig.model_validate({"seed": 0, "byzantine": {"fraction": 0.2, "kind": "sign_flip",
                                                                   "persistent": True}})
    return cfg.model_copy(update={"faults": faults, "data": cfg.data.model_copy(update={"batch_size": 32})})


def test_sign_flippers_lose_their_reputation_in_a_run(tmp_path: Path, fed_config) -> None:
    # measured for faults seeds 0, 1, 2: attackers -1.69 / -1.68 / -1.38 on average, honest +0.43 / +0.59 / +0.71
    cfg = _attacked(fed_config)
    s = run_federated(cfg, tmp_path / "run", progress="none")
    bad = persistent_attackers(cfg.faults, 10)
    assert s.reputation is not None and set(s.reputation) == set(range(10))
    honest = [z for c, z in s.reputation.items() if c not in bad]
    assert sum(s.reputation[c] for c in bad) / len(bad) < -1.0 < 0.0 < sum(honest) / len(honest)
    rounds = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    left_out = [c for r in rounds if r["kind"] == "round" for c in r["distrusted"]]
    assert set(left_out) & bad  # the flippers were left out of later rounds
    assert all(not r["distrusted"] for r in rounds if r["kind"] == "round" and r["round"] <= 1)  # no votes yet


@pytest.mark.parametrize("reference", ["clients", "server"])
def test_reputation_is_rebuilt_on_resume(tmp_path: Path, fed_config, interrupt_and_resume, strip_timings,
                                         reference: str) -> None:
    cfg = _attacked(fed_config, aggregator_clip="norm", reputation_reference=reference)
    ref = run_federated(cfg, tmp_path / "ref", progress="none")
    resumed = interrupt_and_resume(cfg, tmp_path / "cut", 4)
    assert resumed.model_sha256 == ref.model_sha256 and resumed.reputation == ref.reputation
    assert strip_timings(tmp_path / "cut") == strip_timings(tmp_path / "ref")


def test_votes_against_the_server_reference_need_no_majority() -> None:
    # 3 of 5 clients flip: the others' median now points the wrong way, the server's reference does not
    rows = [HONEST[0], HONEST[1], [-x for x in HONEST[2]], [-x for x in HONEST[3]], [-x for x in HONEST[4]]]
    by_clients = round_votes(_contribs(rows))
    assert by_clients[0][0] < 0 and by_clients[2][0] > 0  # the majority of flippers wins the consensus
    by_server = round_votes(_contribs(rows), reference=(1.0, -1.0, 0.5))
    assert [by_server[c][0] for c in range(5)] == [3.0, 3.0, -3.0, -3.0, -3.0]
    assert all(by_server[c][1] == 3.0 for c in range(5))  # one unit of weight per seed
    assert round_votes(_contribs(HONEST[:2]), reference=(1.0, -1.0, 0.0))[1][:2] == (2.0, 2.0)  # two clients suffice


def test_server_reference_runs_a_clients_steps_on_its_root_set_and_restores_the_weights(fed_config) -> None:
    import torch

    from fedzo.federation.server.reference import ServerReference, root_indices
    from fedzo.tasks.objective import build_objective
    from fedzo.zo import DirectionalLoss, EstimatorConfig, ParamSet, Perturber, make_zo_optimizer, zo_step
    from fedzo.zo.noise import NoiseSpec

    sc = fed_config()
    obj = build_objective(sc.model, sc.data, sc.runtime, sc.seed)
    params = ParamSet.from_module(obj.classifier)
    pert = Perturber(params, NoiseSpec(sc.zo.generator, sc.zo.distribution, sc.zo.chunk_size))
    before = params.snapshot()
    est = EstimatorConfig(sc.zo.estimator, sc.zo.eps, sc.zo.q)
    ref = ServerReference(obj, params, pert, seed=3, examples=16, estimator=est, optimizer=sc.optimizer.name)
    assert root_indices(3, len(obj.train), 16) == root_indices(3, len(obj.train), 16) != root_indices(4, len(obj.train), 16)
    seeds = (11, 12, 13)
    got = ref.scalars(seeds, 1e-3)
    assert len(got) == len(seeds) * sc.zo.q and ref.seconds > 0
    assert all(torch.equal(before[n], t) for n, t in zip(params.names, params.tensors, strict=True))
    # the same K steps written out by hand, on the root set, from the same weights
    root = [obj.train[i] for i in root_indices(3, len(obj.train), 16)]
    batch = next(iter(obj.classifier.batches(root, len(root))))

    def loss() -> float:
        with torch.no_grad():
            return float(obj.classifier.loss(batch))

    opt, by_hand = make_zo_optimizer(sc.optimizer.name), []
    for seed in seeds:
        by_hand.extend(zo_step(pert, DirectionalLoss(loss), seed, est, opt, 1e-3).grads)
    assert tuple(by_hand) == got


def test_sign_flippers_lose_their_reputation_against_the_server_reference(tmp_path: Path, fed_config) -> None:
    cfg = _attacked(fed_config, reputation_reference="server", reference_examples=64)
    s = run_federated(cfg, tmp_path / "run", progress="none")
    bad = persistent_attackers(cfg.faults, 10)
    assert s.reputation is not None
    honest = [z for c, z in s.reputation.items() if c not in bad]
    assert max(s.reputation[c] for c in bad) < 0.0 < sum(honest) / len(honest)
    rounds = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["reference_seconds"] > 0 for r in rounds if r["kind"] == "round" and r["round"] >= 1)


def test_a_server_reference_needs_the_reputation(tmp_path: Path) -> None:
    from fedzo.config.scenario import load_scenario

    bad = tmp_path / "ref.yaml"
    bad.write_text("federation: {reputation: false, reputation_reference: server}\n")
    with pytest.raises(ScenarioError, match="reputation_reference"):
        load_scenario(bad)


def test_reputation_needs_the_seeds_and_scalars_protocol(tmp_path: Path) -> None:
    from fedzo.config.scenario import load_scenario

    bad = tmp_path / "fo.yaml"
    bad.write_text("optimizer: {name: fo-adam}\nfederation: {reputation: true}\n")
    with pytest.raises(ScenarioError, match="federation.reputation"):
        load_scenario(bad)


def test_a_loud_client_is_left_out_in_the_round_it_first_sends() -> None:
    rep = Reputation()
    now = {0: (1.0, 4.0, math.log(15.0)), 1: (1.0, 4.0, 0.1), 2: (-1.0, 4.0, -0.1)}
    assert rep.distrusted([0, 1, 2], now) == [0]  # scale counts this round; direction only earlier ones
    agg = RobustAggregator("mean", reputation=Reputation())
    out = agg(_contribs([*HONEST, [50 * x for x in HONEST[2]]]))
    assert agg.left_out == [5] and out == pytest.approx(tuple(sum(col) / 5 for col in zip(*HONEST, strict=True)))


def test_reputation_is_on_by_default_for_seeds_and_scalars_only(fed_config) -> None:
    zo = fed_config()
    assert zo.federation.reputation is None and zo.federation.scores_clients(seeds_and_scalars=zo.is_zo)
    assert RobustAggregator.from_config(zo.federation).reputation is not None
    fo = fed_config(optimizer="fo-adam")  # the FedAvg baseline validates with the default and is not scored
    assert not fo.federation.scores_clients(seeds_and_scalars=fo.is_zo)
    off = fed_config(reputation=False)
    assert RobustAggregator.from_config(off.federation).reputation is None
