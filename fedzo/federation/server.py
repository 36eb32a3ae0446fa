"""The server side of the seeds-and-scalars protocol, independent of the engine.

``FederatedServer`` drives rounds over a :class:`Transport` (Flower's ``Grid`` in
simulation and deployment, direct calls in the in-process engine). Round ``r``:

1. sample participants and draw K step seeds from the run seed (deterministic);
2. send each participant its catch-up to ``global(r - 1)``, the seeds, lr, eps, q;
3. validate replies (counted, never raised), aggregate per direction seed;
4. append ``(seed, coefficient)`` entries to the update log, then apply them to the
   global model (``replay``/``full``/``auto``: in order; ``seed_pool``: rebuilt from the
   pool totals), so ``global(r)`` = initial + replay of the log, bitwise;
5. evaluate every E rounds; write client and round records.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
from flwr.app import Message, RecordDict

from fedzo.errors import FedzoError
from fedzo.federation.aggregate import Contribution, validate_replies
from fedzo.federation.bytes import MessageSize, estimated_transport_overhead
from fedzo.federation.catchup import CatchUpPlanner, SeedPool
from fedzo.federation.client import ClientSetup, config_digest
from fedzo.devices.clock import ClientTimeline, ClientTiming, Status, simulate_round
from fedzo.federation.config import FederatedRunConfig
from fedzo.federation.faults import collect_replies, fault_totals, round_fault_counts, with_faults
from fedzo.federation.fleet import FleetPlan, memory_frontier, plan_fleet
from fedzo.federation.robust import RobustAggregator
from fedzo.federation.handshake import handshake
from fedzo.federation.messages import (
    MESSAGE_TYPE, Downlink, Expected, build_downlink,
)
from fedzo.runs import RunDir, accuracy_summary, peak_rss_bytes, report_torn_log
from fedzo.zo import (
    LogEntry, NoiseSpec, ParamSet, Perturber, Schedule, UpdateLog, derive_seed, direction_seeds,
    param_digest,
)
from fedzo.zo.optimizers import ZOSGD, ZOSGDSign

STEP_TAG = 0x57E9
SAMPLE_TAG = 0x5A3F


class FederationError(FedzoError):
    """The federation cannot proceed (nodes missing, handshake failed)."""


class Transport(Protocol):
    """How the server reaches clients."""

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        """Wait until ``expected`` nodes are connected; return their ids."""

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        """Send messages, return the replies that arrived within ``timeout``."""

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        """A message to ``node``."""


class GridTransport:
    """Flower's Grid (simulation and deployment engines)."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            ids = sorted(int(n) for n in self.grid.get_node_ids())
            if len(ids) >= expected:
                return ids
            if time.monotonic() > deadline:
                raise FederationError(f"only {len(ids)} of {expected} nodes connected within {timeout:.0f} s; "
                                      "start more SuperNodes or lower num_clients")
            time.sleep(0.5)

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        return list(self.grid.send_and_receive(list(messages), timeout=timeout))

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        return Message(content, dst_node_id=node, message_type=MESSAGE_TYPE, group_id=str(round_))


@dataclass
class RoundOutcome:
    """What one round did (for tests and the bench)."""

    round: int
    entries: list[LogEntry]
    accepted: list[int]
    rejected: dict[int, str]
    skipped_reason: str | None = None


def step_seeds(run_seed: int, round_: int, k: int) -> tuple[int, ...]:
    """The K step seeds of a round (replay/full/auto catch-up)."""
    return tuple(derive_seed(run_seed, STEP_TAG, round_, i) for i in range(k))


def sample_clients(run_seed: int, round_: int, num_clients: int, count: int, attempt: int = 0,
                   eligible: Sequence[int] | None = None) -> list[int]:
    """The participants of a round (sorted), a pure function of the seeds.

    ``eligible`` restricts the draw (clients excluded for memory); with every client
    eligible the draw is the same as without it.
    """
    rng = random.Random(derive_seed(run_seed, SAMPLE_TAG, round_, attempt))
    population: Sequence[int] = range(num_clients) if eligible is None else list(eligible)
    return sorted(rng.sample(population, min(count, len(population))))


def _timeline(t: ClientTiming, start: float, status: Status) -> ClientTimeline:
    """Absolute times of a client that is not part of the keep/deadline decision."""
    d = start + t.download_s
    r = d + t.replay_s
    c = r + t.compute_s
    u = c + t.upload_s
    return ClientTimeline(t.client_id, start, d, r, c, u, status, u)


class FederatedServer:
    """Server state: global model, update log, catch-up planner, clock; runs rounds."""

    def __init__(self, cfg: FederatedRunConfig, run: RunDir, objective: Any, *, resume: bool,
                 fleet: Any | None = None) -> None:
        """``fleet`` (a scenario's :class:`fedzo.scenario.FleetConfig`, or None for every client
        on the host stand-in) is checked here: a refused fleet raises before any round."""
        self.cfg = cfg
        self.fed = fed = cfg.federation
        self.run = run
        self.objective = objective
        self.params = ParamSet.from_module(objective.classifier)
        self.spec = NoiseSpec(fed.generator, fed.distribution, fed.chunk_size)
        self.perturber = Perturber(self.params, self.spec)
        self.initial = self.params.snapshot()
        self.plan: FleetPlan = plan_fleet(cfg, fleet, objective, self.params.numel)
        self._synced_this_round: list[int] = []
        self.setup_json = ClientSetup(cfg, str(run.log_path)).to_json()
        self.digest = config_digest(self.setup_json)
        self.aggregate = RobustAggregator.from_config(fed)  # running-median clip state: see _apply
        self.unknown_replies = 0  # replies from nodes outside the round (reset per round)
        self.optimizer = ZOSGDSign() if fed.optimizer == "zo-sgd-sign" else ZOSGD()
        self.schedule = Schedule(fed.lr, fed.schedule, fed.rounds, fed.warmup_rounds)
        self.pool = SeedPool(fed.seed, fed.seed_pool_size) if fed.catch_up == "seed_pool" else None
        self.planner = CatchUpPlanner(fed.catch_up, self.params.numel, self.params.nbytes,
                                      fed.history_rounds, self.pool)
        for c in range(fed.num_clients):
            self.planner.mark_synced(c, 0)
        self.node_of: dict[int, int] = {}
        self.sim_seconds = 0.0
        self.host_seconds = 0.0
        self.bytes_up = 0
        self.bytes_down = 0
        self.messages = 0
        self.peak_client_memory = 0
        self.done = 0
        self._open_log(resume)

    # -- state ---------------------------------------------------------------------------
    def _header(self) -> dict[str, Any]:
        from fedzo.zo import param_signature

        return {"param_signature": param_signature(self.params), "param_count": len(self.params),
                "param_numel": self.params.numel, "noise": self.spec.to_dict(),
                "optimizer": self.fed.optimizer, "catch_up": self.fed.catch_up,
                "initial_digest": param_digest(self.params), "protocol": "fedzo-federated"}

    def _open_log(self, resume: bool) -> None:
        header = self._header()
        if not resume or not self.run.log_path.exists():
            if self.run.log_path.exists():
                self.run.log_path.unlink()
            self.log = UpdateLog.create(header, self.run.log_path)
            if resume:
                self.run.truncate_metrics(-1)
            return
        log, load_report = UpdateLog.load(self.run.log_path, repair=True)
        report_torn_log(self.run.log_path, load_report.bad_line, load_report.dropped_lines)
        if log.header.get("initial_digest") != header["initial_digest"]:
            raise FederationError(f"{self.run.path}: the initial model differs from the one this run started from")
        rounds = [int(r["round"]) for r in self.run.read_metrics() if r.get("kind") == "round"]
        done = min(max(rounds, default=0), log.last_round or 0)
        log.truncate(done)
        kept = self.run.truncate_metrics(done)
        self.log = log
        for r, entries in log.rounds:
            for rec in kept:
                if rec.get("kind") == "client" and rec["round"] == r and rec.get("synced", rec["status"] == "ok"):
                    self.planner.mark_synced(int(rec["client"]), r - 1)
            self._apply(r, entries)
        last = [r for r in kept if r.get("kind") == "round"]
        if last:
            self.sim_seconds, self.host_seconds = float(last[-1]["sim_seconds"]), float(last[-1]["host_seconds"])
            self.bytes_up, self.bytes_down = int(last[-1]["bytes_up_total"]), int(last[-1]["bytes_down_total"])
        clients = [r for r in kept if r.get("kind") == "client"]
        self.peak_client_memory = max((int(r["peak_memory_bytes"] or 0) for r in clients), default=0)
        self.done = done

    def _apply(self, round_: int, entries: Sequence[LogEntry]) -> None:
        """Move the global model by a logged round (and tell the planner)."""
        pairs = [(e.seed, e.coefficient) for e in entries]
        self.planner.record_round(round_, pairs)
        self.aggregate.observe(entries)  # rebuilt from the log on resume
        if self.pool is not None:
            cu = self.pool.catch_up(round_)
            self.params.load(self.initial)
            for seed, coef in zip(cu.seeds, cu.coefs, strict=True):
                self.perturber.apply(seed, (coef,))
        else:
            for e in entries:
                self.perturber.apply(e.seed, e.alphas)

    def weights(self) -> dict[str, np.ndarray]:
        """The global trainable tensors (for ``full`` catch-up)."""
        return {n: t.detach().cpu().numpy().copy() for n, t in zip(self.params.names, self.params.tensors, strict=True)}

    @property
    def model_sha256(self) -> str:
        """Digest of the global trainable tensors."""
        return param_digest(self.params)

    # -- protocol --------------------------------------------------------------------------
    def handshake(self, transport: Transport) -> None:
        """Send the run configuration to every node; learn which client each node serves."""
        self.node_of = handshake(transport, self.setup_json, self.digest, self.fed.num_clients,
                                 self.fed.setup_timeout)

    def _seeds(self, round_: int) -> tuple[int, ...]:
        if self.pool is not None:
            return self.pool.draw(round_, self.fed.local_steps)
        return step_seeds(self.fed.seed, round_, self.fed.local_steps)

    def run_round(self, transport: Transport, round_: int) -> RoundOutcome:
        """One round end to end; appends the log line and the metric records."""
        fed = self.fed
        t0 = time.perf_counter()
        seeds = self._seeds(round_)
        lr = self.schedule(round_ - 1)
        attempts = 2 if fed.below_min == "retry" else 1
        records: list[dict[str, Any]] = []
        round_sim = 0.0
        self._synced_this_round = []
        for attempt in range(attempts):
            outcome, recs, sim = self._attempt(transport, round_, seeds, lr, attempt, self.sim_seconds + round_sim)
            records += recs
            round_sim += sim
            if outcome.skipped_reason is None:
                break
        self.log.append_round(round_, outcome.entries)
        t_replay = time.perf_counter()
        self._apply(round_, outcome.entries)
        replay_seconds = time.perf_counter() - t_replay
        # every client whose worker caught up to global(r - 1) (kept or not) now holds it
        for c in sorted(set(self._synced_this_round)):
            self.planner.mark_synced(c, round_ - 1)
        self.sim_seconds += round_sim
        self.host_seconds += time.perf_counter() - t0
        m = None
        if round_ % fed.eval_every == 0 or round_ == fed.rounds:
            m = self.evaluate()
        losses = [r["train_loss"] for r in records if r.get("train_loss") is not None]
        records.append({
            "kind": "round", "round": round_, "sim_seconds": self.sim_seconds,
            "host_seconds": self.host_seconds, "server_replay_seconds": replay_seconds,
            "bytes_up": sum(r["bytes_up"] for r in records),
            "bytes_down": sum(r["bytes_down"] for r in records),
            "bytes_up_total": self.bytes_up, "bytes_down_total": self.bytes_down,
            "payload_bytes_up": sum(r["payload_bytes_up"] for r in records),
            "payload_bytes_down": sum(r["payload_bytes_down"] for r in records),
            "train_loss": sum(losses) / len(losses) if losses else None,
            "eval_accuracy": None if m is None else m["accuracy"],
            "eval_macro_f1": None if m is None else m["macro_f1"],
            "participants": len(outcome.accepted), "round_sim_seconds": round_sim,
            "late": sorted(r["client"] for r in records if r["kind"] == "client" and r["status"] == "late"),
            "offline": sorted(r["client"] for r in records if r["kind"] == "client" and r["status"] == "offline"),
            "rejected": dict(sorted(outcome.rejected.items())) if outcome.rejected else {},
            "skipped": outcome.skipped_reason, "history_entries": self.planner.history_entries,
            **round_fault_counts(records, self.unknown_replies),
            **{f"{k}_labelled_estimate": v for k, v in estimated_transport_overhead(
                2 * len([r for r in records if r["kind"] == "client"])).items()},
        })
        for r in records[:-1]:
            r.pop("train_loss", None)
        self.unknown_replies = 0
        self.run.append_metrics(records)
        self.done = round_
        return outcome

    def _attempt(self, transport: Transport, round_: int, seeds: tuple[int, ...], lr: float,
                 attempt: int, start: float) -> tuple[RoundOutcome, list[dict[str, Any]], float]:
        """One try of a round starting at simulated time ``start``; returns the outcome, the
        client records and the attempt's simulated duration."""
        fed, plan = self.fed, self.plan
        count, keep = plan.sample_sizes(fed.participants)
        clients = sample_clients(fed.seed, round_, fed.num_clients, count, attempt, eligible=plan.eligible)
        expected: dict[int, Expected] = {}
        msgs: list[Message] = []
        sizes_down: dict[int, MessageSize] = {}
        entries_of: dict[int, int] = {}
        client_of_node: dict[int, int] = {}
        offline_at_start: set[int] = set()
        for c in clients:
            cu = self.planner.plan(c, round_ - 1, self.weights)
            d = Downlink("train", round_, c, seeds, lr, fed.eps, fed.q, cu, config_digest=self.digest)
            msg = transport.new_message(build_downlink(d), self.node_of[c], round_)
            sizes_down[c] = MessageSize.of(msg)
            entries_of[c] = len(cu.seeds) if cu.kind in ("replay", "seed_pool") else 0
            # a device that is offline when the round starts never gets the message
            pre = plan.timing(c, down_bytes=sizes_down[c].message, up_bytes=0, replay_entries=entries_of[c],
                              host_seconds=None, local_steps=fed.local_steps)
            off = plan.offline_at(c, pre, seed=fed.seed, round_=round_, attempt=attempt, start=start)
            if off is not None and off <= start:
                offline_at_start.add(c)
                continue
            msgs.append(msg)
            client_of_node[self.node_of[c]] = c
            expected[c] = Expected(round_, c, seeds, fed.q, fed.max_abs_scalar)
        replies = transport.exchange(msgs, fed.round_timeout) if msgs else []
        collected = collect_replies(replies, client_of_node, expected, FederationError)
        contents: dict[int, RecordDict | Exception] = collected.contents
        sizes_up = {c: MessageSize.of(rep) for c, rep in collected.messages.items()}
        self.unknown_replies += collected.unknown
        injected = getattr(transport, "injected", {})
        check = validate_replies(contents, expected)
        # the simulated clock: who finishes when, who is kept (deterministic inputs only)
        timings: dict[int, ClientTiming] = {}
        for c in clients:
            if c in offline_at_start:
                continue
            u = check.uplinks.get(c)
            t = plan.timing(c, down_bytes=sizes_down[c].message, up_bytes=sizes_up.get(c, MessageSize(0, 0)).message,
                            replay_entries=entries_of[c], host_seconds=u.compute_seconds if u is not None else None,
                            local_steps=fed.local_steps)
            off = plan.offline_at(c, t, seed=fed.seed, round_=round_, attempt=attempt, start=start)
            timings[c] = replace(t, offline_at=off)
        sim = simulate_round([timings[c] for c in sorted(check.uplinks)], deadline=plan.deadline, keep=keep,
                             start=start)
        lines = {int(tl.client_id): tl for tl in sim.timelines}
        round_end = sim.end if lines else start
        records: list[dict[str, Any]] = []
        accepted: list[int] = []
        for c in clients:
            down = sizes_down[c]
            up = sizes_up.get(c, MessageSize(0, 0))
            u = check.uplinks.get(c)
            reason: str | None
            if c in offline_at_start:
                status, reason = "offline", "offline when the round started (device availability)"
                down = up = MessageSize(0, 0)
                tl = ClientTimeline(str(c), start, start, start, start, start, "offline", start)
            elif c in lines:
                tl = lines[c]
                status = "late" if tl.status == "dropped" else tl.status
                reason = {
                    "ok": None,
                    "offline": f"went offline at simulated {tl.end:.3f} s before its upload ended "
                               "(device availability)",
                    "late": f"finished at simulated {tl.upload_end:.3f} s, after the deadline of "
                            f"{plan.deadline} s",
                    "dropped": f"over-commit: the first {keep} replies were already in",
                }[tl.status]
                if status != "ok":
                    up = MessageSize(0, 0)  # the server no longer listens for this reply
            else:  # no reply, or a reply the server rejected: its transfers on the clock
                tl = _timeline(timings[c], start, "dropped")
                status = "dropped" if c not in contents else "failed" if check.rejected[c] == "failed" else "excluded"
                reason = check.reasons.get(c) if c in contents else "no reply within round_timeout"
                if c in contents:
                    round_end = max(round_end, min(tl.upload_end, start + plan.deadline)
                                    if plan.deadline is not None else tl.upload_end)
            self.bytes_down += down.message
            self.bytes_up += up.message
            if status == "ok" and u is not None:
                accepted.append(c)
                self.peak_client_memory = max(self.peak_client_memory, u.peak_memory_bytes)
            records.append({
                "kind": "client", "round": round_, "client": c, "device": plan.names[c], "status": status,
                "reason": reason, "attempt": attempt, "bytes_up": up.message, "bytes_down": down.message,
                "payload_bytes_up": up.payload, "payload_bytes_down": down.payload,
                "sim_start": tl.start, "sim_download_end": tl.download_end, "sim_replay_end": tl.replay_end,
                "sim_compute_end": tl.compute_end, "sim_end": tl.end,
                "catch_up_entries": entries_of[c] if c not in offline_at_start else 0,
                "synced": u is not None,
                "host_compute_seconds": u.compute_seconds if u is not None else 0.0,
                "peak_memory_bytes": u.peak_memory_bytes if u is not None else None,
                "fault": injected.get(c), "extra_replies": collected.extras.get(c, []),
                "train_loss": u.loss_mean if status == "ok" and u is not None else None,
            })
        self._synced_this_round += sorted(check.uplinks)
        round_sim = round_end - start
        rejected = dict(check.rejected)
        if len(accepted) < fed.min_clients:
            reason = (f"{len(accepted)} valid replies < min_clients {fed.min_clients} "
                      f"(policy {fed.below_min}{', retrying' if attempt == 0 and fed.below_min == 'retry' else ''})")
            return RoundOutcome(round_, [], [], rejected, reason), records, round_sim
        grads = self.aggregate([Contribution(c, check.uplinks[c].num_examples, check.uplinks[c].scalars)
                                for c in accepted])
        dirs = [s for step in seeds for s in direction_seeds(step, fed.q)]
        lr_dir = lr / fed.q
        entries = [LogEntry(round_, s, (self.optimizer.coefficient(g, lr_dir),), g, lr_dir)
                   for s, g in zip(dirs, grads, strict=True)]
        return RoundOutcome(round_, entries, accepted, rejected), records, round_sim

    def evaluate(self) -> dict[str, Any]:
        """Accuracy of the global model on the evaluation split."""
        return self.objective.classifier.evaluate(self.objective.eval, self.cfg.eval_batch_size)  # type: ignore[no-any-return]

    def run_all(self, transport: Transport) -> dict[str, Any]:
        """Handshake, then the remaining rounds; returns the summary (also written)."""
        transport = with_faults(transport, self.cfg.faults)
        self.handshake(transport)
        self.write_fleet_files()
        if self.done == 0 and not any(r.get("kind") == "round" for r in self.run.read_metrics()):
            m = self.evaluate()
            self.run.append_metrics([{
                "kind": "round", "round": 0, "sim_seconds": 0.0, "host_seconds": 0.0, "bytes_up": 0,
                "bytes_down": 0, "bytes_up_total": 0, "bytes_down_total": 0, "payload_bytes_up": 0,
                "payload_bytes_down": 0, "train_loss": None, "eval_accuracy": m["accuracy"],
                "eval_macro_f1": m["macro_f1"], "participants": 0, "round_sim_seconds": None,
                "rejected": {}, "skipped": None, "history_entries": 0}])
        for r in range(self.done + 1, self.fed.rounds + 1):
            self.run_round(transport, r)
        return self.summary()

    def write_fleet_files(self) -> None:
        """``memory_frontier.json`` and the ``kind: fleet`` record (once per run directory)."""
        write_fleet_files(self.run, self.plan)

    def summary(self) -> dict[str, Any]:
        """summary.json content."""
        records = self.run.read_metrics()
        s = {
            "name": self.cfg.name, "model": self.cfg.model, "optimizer": self.fed.optimizer,
            "method": "zo-federated", "catch_up": self.fed.catch_up, "engine": self.fed.engine,
            "rounds": self.fed.rounds, **accuracy_summary(records),
            "sim_seconds": self.sim_seconds, "host_seconds": self.host_seconds,
            "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
            "peak_client_memory_bytes": self.peak_client_memory, "server_peak_rss_bytes": peak_rss_bytes(),
            "modelled_client_memory_bytes": self.plan.modelled_memory(),
            "excluded_clients": list(self.plan.excluded),
            "model_sha256": self.model_sha256, "faults": fault_totals(records),
        }
        self.run.write_summary(s)
        return s


def write_fleet_files(run: RunDir, plan: FleetPlan) -> None:
    """Write ``memory_frontier.json`` and append the ``kind: fleet`` record unless present."""
    import json

    tmp = run.path / "memory_frontier.json.tmp"
    tmp.write_text(json.dumps(memory_frontier(plan), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(run.path / "memory_frontier.json")
    if not any(r.get("kind") == "fleet" for r in run.read_metrics()):
        run.append_metrics([plan.record()])
