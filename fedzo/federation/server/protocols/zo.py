"""The seeds-and-scalars protocol (DeComFL-style), server side, as a round-engine plug-in.

Round ``r``: every participant gets the K step seeds, lr, eps, q and its catch-up to
``global(r - 1)``; it answers with K x q projected gradients. The server aggregates them
per direction seed, turns them into update-log entries (:func:`fedzo.zo.aggregate_entries`),
appends the round to the log and applies it (:func:`fedzo.zo.apply_entries`), so
``global(r)`` = initial weights + replay of the log, bitwise. The log is the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from flwr.app import RecordDict

from fedzo.config.scenario import Scenario
from fedzo.devices.clock import ClientWork, Clock
from fedzo.errors import FederationError
from fedzo.federation.batches import batch_shape, local_examples
from fedzo.federation.catchup import CatchUp, CatchUpPlanner
from fedzo.federation.parts import RunParts
from fedzo.federation.server.aggregate import Contribution
from fedzo.federation.server.protocols.base import Outgoing
from fedzo.federation.server.reference import ServerReference
from fedzo.federation.server.reputation import Vote, votes_from_json, votes_to_json
from fedzo.federation.server.robust import RobustAggregator
from fedzo.federation.setup import ClientSetup
from fedzo.federation.wire.bytes import payload_bytes
from fedzo.federation.wire.messages import (
    Downlink,
    Expected,
    MessageError,
    ScaleError,
    Uplink,
    build_downlink,
    parse_uplink,
)
from fedzo.killpoints import kill_point
from fedzo.records import ClientRecord
from fedzo.runs import RunDir, report_torn_log
from fedzo.zo import (
    LogEntry,
    ParamSet,
    Schedule,
    UpdateLog,
    aggregate_entries,
    make_zo_optimizer,
    param_digest,
    param_signature,
)
from fedzo.zo.optimizers import ZOSGD
from fedzo.zo.server_optimizers import rebuild


class ZOProtocol:
    """Server state of the seeds-and-scalars protocol: global model, update log, catch-up."""

    method = "zo-federated"

    def __init__(self, scenario: Scenario, parts: RunParts, clock: Clock, *, resync_log: str | None) -> None:
        """``parts``: the run's, built from ``scenario`` (:func:`~fedzo.federation.parts.build_parts`);
        ``resync_log``: the update log path a same-machine worker may re-sync from (None in
        deployment)."""
        self.scenario = scenario
        self.partitions = parts.partitions
        self.fed = fed = scenario.federation
        self.objective = objective = parts.objective
        self.estimator = parts.estimator
        self.params = ParamSet.from_module(objective.classifier)
        self.server_opt = parts.global_model(self.params)  # a mask from the initial weights, as every client's
        self.perturber = self.server_opt.perturber
        self.initial = self.params.snapshot()
        self.policy = parts.catch_up()
        self.planner = CatchUpPlanner(self.policy, clock)
        self.planner.history.history_rounds = fed.history_rounds
        self.planner.history.group_rounds = self.server_opt.stateful
        for c in range(fed.num_clients):
            self.planner.mark_synced(c, 0)
        self.aggregate = RobustAggregator.from_config(fed)  # running-median clip state: see _apply
        self.reference = ServerReference(objective, self.params, self.perturber, seed=scenario.seed,
                                         examples=fed.reference_examples, estimator=self.estimator,
                                         optimizer=scenario.optimizer.name) \
            if fed.scores_clients(seeds_and_scalars=True) and fed.reputation_reference == "server" else None
        optimizer = make_zo_optimizer(scenario.optimizer.name)
        if not isinstance(optimizer, ZOSGD):
            raise FederationError(f"optimizer.name: {scenario.optimizer.name!r} cannot run federated")
        self.optimizer = optimizer
        opt = scenario.optimizer
        self.schedule = Schedule(opt.lr, opt.schedule, fed.rounds, opt.warmup)
        self.workers_resync = resync_log is not None  # False in deployment: node caches belong to one Flower run
        self.setup_json = ClientSetup(scenario, resync_log).to_json()
        self.digest = ClientSetup(scenario, resync_log).digest
        self.log = UpdateLog.create(self._header())
        self.seeds: tuple[int, ...] = ()
        self.lr = 0.0

    # -- state -----------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        header = {"param_signature": param_signature(self.params), "param_count": len(self.params),
                  "param_numel": self.params.numel, "noise": self.perturber.spec.to_dict(),
                  "optimizer": self.scenario.optimizer.name, "catch_up": self.fed.catch_up,
                  "initial_digest": param_digest(self.params), "protocol": "fedzo-federated"}
        if self.server_opt.stateful:
            header["server_optimizer"] = {"name": self.server_opt.name, **self.server_opt.hyperparameters()}
        return header

    def open(self, run: RunDir, resume: bool, last_metric_round: int, clients: Sequence[ClientRecord]) -> int:
        """Create the update log, or load it and replay it onto the global model."""
        header = self._header()
        if not resume or not run.log_path.exists():
            run.log_path.unlink(missing_ok=True)
            self.log = UpdateLog.create(header, run.log_path)
            return -1
        log, report = UpdateLog.load(run.log_path, repair=True)
        report_torn_log(run.log_path, report.bad_line, report.dropped_lines)
        if log.header.get("initial_digest") != header["initial_digest"]:
            raise FederationError(f"{run.path}: the initial model differs from the one this run started from")
        done = min(last_metric_round, log.last_round or 0)
        log.truncate(done)
        self.log = log
        # A resumed deployment is a new Flower run: its nodes start without the synced models they
        # cached for the interrupted one, so every client is caught up from the initial weights.
        for r, entries in log.rounds:
            for rec in clients:
                if rec.round == r and rec.synced and self.workers_resync:
                    self.planner.mark_synced(rec.client, r - 1)
            self._apply(r, entries, votes_from_json(log.meta.get(r, {}).get("reputation", {})))
        return done

    def _apply(self, round_: int, entries: Sequence[LogEntry], votes: dict[int, Vote]) -> None:
        """Move the global model by a logged round (and tell the planner and the aggregator)."""
        self.planner.record_round(round_, [(e.seed, e.coefficient) for e in entries])
        self.aggregate.observe(entries, votes)  # clip history and reputation: rebuilt from the log on resume
        rebuild(self.server_opt, self.policy, self.log, round_ - 1, round_, lambda: self.params.load(self.initial))

    def weights(self) -> dict[str, np.ndarray]:
        """The global trainable tensors, and the server optimizer's buffers (``full`` catch-up)."""
        named = {**dict(zip(self.params.names, self.params.tensors, strict=True)), **self.server_opt.state_tensors()}
        return {n: t.detach().cpu().numpy().copy() for n, t in named.items()}

    # -- a round ---------------------------------------------------------------------------
    def begin_round(self, round_: int) -> None:
        """The round's step seeds and lr."""
        self.seeds = self.policy.step_seeds(self.scenario.seed, round_, self.fed.local_steps)
        self.lr = self.schedule(round_ - 1)

    def downlink(self, round_: int, client: int) -> Outgoing:
        """Seeds, lr, eps, q and the client's catch-up to ``global(round_ - 1)``."""
        cu = self.planner.plan(client, round_ - 1, self.weights)
        est = self.estimator
        d = Downlink("train", round_, client, self.seeds, self.lr, est.eps, est.q, cu, config_digest=self.digest)
        content = build_downlink(d)
        share = 0
        if cu.kind != "none":  # the catch-up's share: the same message without it
            bare = build_downlink(replace(d, catch_up=CatchUp("none", cu.from_round, cu.to_round)))
            share = payload_bytes(content) - payload_bytes(bare)
        return Outgoing(content, cu.replayed_entries, share)

    def parse(self, round_: int, client: int, content: RecordDict) -> Uplink:
        """The client's scalars, checked against what it was sent: its seeds, its scalar count
        and bound, and its example count (K local batches from its partition, known here)."""
        examples = len(self.seeds) * min(self.scenario.data.batch_size, len(self.partitions[client]))
        return parse_uplink(content, Expected(round_, client, self.seeds, self.estimator.q, self.fed.max_abs_scalar,
                                              examples=examples))

    def screen(self, round_: int, updates: Mapping[int, Uplink]) -> dict[int, MessageError]:
        """Replies whose largest |scalar| is more than ``federation.max_scalar_ratio`` times the
        run's own scale (:meth:`RobustAggregator.reference_scale`): a reply scaled up by an
        attacker is rejected however small the honest scalars are, which an absolute bound
        cannot do."""
        ratio = self.fed.max_scalar_ratio
        if ratio is None or not updates:
            return {}
        scale = self.aggregate.reference_scale(u.scalars for u in updates.values())
        if scale <= 0:
            return {}
        out: dict[int, MessageError] = {}
        for c, u in sorted(updates.items()):
            worst = max((abs(x) for x in u.scalars), default=0.0)
            if worst > ratio * scale:
                out[c] = ScaleError(f"client {c} sent |scalar| {worst:.3g}, {worst / scale:.3g} times the run's "
                                    f"scale {scale:.3g} (federation.max_scalar_ratio {ratio:g})")
        return out

    def work(self, round_: int, client: int, update: Uplink | None, down_bytes: int, up_bytes: int,
             catch_up_entries: int) -> ClientWork:
        """The catch-up, then K local ZO steps on the client's own batches."""
        sc, train, clf = self.scenario, self.objective.train, self.objective.classifier
        batches = [local_examples(train, self.partitions[client], sc.data.batch_size, sc.seed, round_, client, k)
                   for k in range(self.fed.local_steps)]
        clf.prefetch([e for b in batches for e in b])  # tokenized in one call (host speed only)
        shapes = tuple(batch_shape(clf, b) for b in batches)
        return ClientWork(down_bytes, up_bytes, catch_up_entries, batches=shapes,
                          host_seconds=update.compute_seconds if update is not None else None)

    def commit(self, round_: int, accepted: dict[int, Uplink], synced: Sequence[int]) -> None:
        """Aggregate per direction seed, append the round to the log, apply it."""
        entries: list[LogEntry] = []
        self.aggregate.clear()
        if accepted:
            ref = None if self.reference is None else self.reference.scalars(self.seeds, self.lr)
            grads = self.aggregate([Contribution(c, u.num_examples, u.scalars) for c, u in sorted(accepted.items())],
                                   ref)
            entries = aggregate_entries(round_, self.seeds, self.estimator.q, grads, self.lr, self.optimizer)
        votes = self.aggregate.votes
        self.log.append_round(round_, entries, {"reputation": votes_to_json(votes)} if votes else None)
        kill_point("zo-log-appended", round_)
        self._apply(round_, entries, votes)
        kill_point("zo-model-applied", round_)
        # every client whose worker caught up to global(r - 1) (kept or not) now holds it
        for c in synced:
            self.planner.mark_synced(c, round_ - 1)

    def checkpoint(self, round_: int) -> None:
        """Nothing: the update log is the checkpoint."""

    def evaluate(self) -> dict[str, Any]:
        """Accuracy of the global model on the evaluation split."""
        return self.objective.classifier.evaluate(self.objective.eval, self.scenario.data.eval_batch_size)

    def round_fields(self) -> dict[str, Any]:
        """Catch-up entries the server holds; clients left out by their reputation."""
        out: dict[str, Any] = {"history_entries": self.planner.history_entries,
                               "distrusted": list(self.aggregate.left_out)}
        if self.reference is not None:
            out["reference_seconds"] = round(self.reference.seconds, 4)
        return out

    def summary_fields(self) -> dict[str, Any]:
        """Catch-up policy, the clients' reputations and the global model's digest."""
        rep = self.aggregate.reputation
        return {"catch_up": self.fed.catch_up, "model_sha256": param_digest(self.params),
                "reputation": None if rep is None else {c: round(z, 4) for c, z in rep.scores().items()}}
