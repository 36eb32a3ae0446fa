"""The FedAvg backprop baseline, server side, driven by Flower's own ``FedAvg`` strategy.

``federation.optimizer: fo-sgd | fo-adam`` switches a scenario from seeds and scalars to
FedAvg with backprop: each round the server sends the dense trainable tensors (full
model or LoRA adapters, per ``peft``) as an ArrayRecord; each sampled client trains
``fo_local_epochs`` epochs on its partition (:mod:`fedzo.federation.fedavg_client`) and
returns its tensors; Flower's ``FedAvg.aggregate_train`` averages them weighted by
``num-examples``; ``FedAvg.start`` runs the rounds and calls our ``evaluate_fn`` after
each, where the records are written.

What :class:`FedzoFedAvg` changes in Flower's strategy, and why:

* ``configure_train``: participants come from the same deterministic sampler as the
  seeds-and-scalars server (``sample_clients``), so both protocols train the same
  clients in the same rounds; the config carries the round's lr and the setup digest;
  every message is measured as serialized (:mod:`fedzo.federation.bytes`).
* ``aggregate_train``: replies are measured, checked (tensor names, shapes, finiteness;
  bad or failed replies are counted, never raised), sorted by client id (arrival order
  varies; float sums must not) and then handed to Flower's ``FedAvg.aggregate_train``.
  Fewer than ``min_clients`` valid replies: ``skip`` keeps the global model, ``retry``
  resamples once.
* Clients never evaluate (``fraction_evaluate = 0``); the server evaluates the global
  model every ``eval_every`` rounds, as in the seeds-and-scalars protocol.

The run directory has the same format as a seeds-and-scalars run (metrics.jsonl round
and client lines, summary.json with ``method: "bp"``); the global tensors are saved in
``state/`` after every round, so a killed run resumes with the same result.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedzo.federation.bytes import MessageSize, estimated_transport_overhead
from fedzo.federation.client import ClientSetup, config_digest
from fedzo.devices.clock import simulate_round
from fedzo.federation.config import FederatedRunConfig
from fedzo.federation.fedavg_client import (
    ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, WEIGHT_KEY, FedAvgMessageError, build_train_config, check_arrays,
    load_arrays, params_to_arrays,
)
from fedzo.federation.handshake import handshake
from fedzo.federation.fleet import FleetPlan, plan_fleet
from fedzo.federation.server import GridTransport, _timeline, sample_clients, write_fleet_files
from fedzo.runs import RunDir, accuracy_summary, peak_rss_bytes
from fedzo.zo import ParamSet, Schedule, param_digest

CHECKPOINT = "fedavg_global.safetensors"


@dataclass
class RoundState:
    """What the server knows about the round in flight."""

    round: int
    started: float
    lr: float
    records: list[dict[str, Any]] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    skipped: str | None = None
    round_sim: float = 0.0
    start: float = 0.0  # simulated time the current attempt started
    keep: int | None = None  # over-commit: replies kept per attempt


def check_reply(params: ParamSet, content: RecordDict) -> tuple[int, dict[str, Any]]:
    """(examples, metrics) of a FedAvg reply; raises :class:`FedAvgMessageError`."""
    if list(content.array_records) != [ARRAYS_KEY] or list(content.metric_records) != [METRICS_KEY]:
        raise FedAvgMessageError(f"reply has records {list(content)}; expected {ARRAYS_KEY!r} and {METRICS_KEY!r}")
    check_arrays(params, content.array_records[ARRAYS_KEY], "reply")
    m = dict(content.metric_records[METRICS_KEY])
    n = m.get(WEIGHT_KEY)
    if not isinstance(n, int) or n < 1:
        raise FedAvgMessageError(f"reply reports {WEIGHT_KEY}={n!r}; expected an int >= 1")
    return n, m


class FedAvgBaseline:
    """Server state of a FedAvg run: global tensors, records, checkpoint; runs the strategy."""

    def __init__(self, cfg: FederatedRunConfig, run: RunDir, objective: Any, *, resume: bool,
                 engine: str, fleet: Any | None = None) -> None:
        self.cfg = cfg
        self.fed = cfg.federation
        self.run = run
        self.objective = objective
        self.engine = engine
        self.params = ParamSet.from_module(objective.classifier)
        self.plan: FleetPlan = plan_fleet(cfg, fleet, objective, self.params.numel)
        self.setup_json = ClientSetup(cfg, None).to_json()  # FedAvg clients never re-sync from a log
        self.digest = config_digest(self.setup_json)
        self.schedule = Schedule(self.fed.lr, self.fed.schedule, self.fed.rounds, self.fed.warmup_rounds)
        self.node_of: dict[int, int] = {}
        self.sim_seconds = self.host_seconds = 0.0
        self.bytes_up = self.bytes_down = 0
        self.peak_client_memory = 0
        self.done = 0
        self.current: RoundState | None = None
        if resume:
            self._restore()

    # -- checkpoint ------------------------------------------------------------------------
    @property
    def checkpoint(self) -> Any:
        """Where the global tensors of the last finished round are kept."""
        return self.run.state_dir / CHECKPOINT

    def _save(self, round_: int) -> None:
        from safetensors.torch import save_file

        tmp = self.checkpoint.with_suffix(".tmp")
        save_file({n: t.detach().cpu().contiguous() for n, t in zip(self.params.names, self.params.tensors, strict=True)},
                  str(tmp), metadata={"round": str(round_), "digest": self.digest})
        tmp.replace(self.checkpoint)

    def _restore(self) -> None:
        """Continue from the checkpoint; drop records of rounds it does not hold."""
        from safetensors import safe_open

        done = 0
        if self.checkpoint.is_file():
            with safe_open(str(self.checkpoint), framework="pt") as f:
                done = int((f.metadata() or {})["round"])
                self.params.load({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
        kept = self.run.truncate_metrics(done if done else -1)
        rounds = [r for r in kept if r.get("kind") == "round"]
        if rounds:
            last = rounds[-1]
            self.sim_seconds, self.host_seconds = float(last["sim_seconds"]), float(last["host_seconds"])
            self.bytes_up, self.bytes_down = int(last["bytes_up_total"]), int(last["bytes_down_total"])
        self.peak_client_memory = max((int(r["peak_memory_bytes"] or 0) for r in kept if r.get("kind") == "client"),
                                      default=0)
        self.done = done

    # -- rounds ------------------------------------------------------------------------------
    def messages(self, strategy: FedzoFedAvg, arrays: ArrayRecord, round_: int, attempt: int) -> list[Message]:
        """Train messages of one attempt of ``round_``, measured; records their sizes."""
        st = self.current
        assert st is not None
        plan, fed = self.plan, self.fed
        count, st.keep = plan.sample_sizes(fed.participants)
        st.start = self.sim_seconds + st.round_sim
        clients = sample_clients(fed.seed, round_, fed.num_clients, count, attempt, eligible=plan.eligible)
        record = RecordDict({ARRAYS_KEY: arrays, CONFIG_KEY: build_train_config(round_, st.lr, self.digest)})
        msgs = list(strategy._construct_messages(record, [self.node_of[c] for c in clients], MessageType.TRAIN))
        sent = []
        for c, msg in zip(clients, msgs, strict=True):
            size = MessageSize.of(msg)
            pre = plan.timing(c, down_bytes=size.message, up_bytes=0, replay_entries=0, host_seconds=None)
            off = plan.offline_at(c, pre, seed=fed.seed, round_=round_, attempt=attempt, start=st.start)
            rec = {"kind": "client", "round": round_, "client": c, "device": plan.names[c],
                   "status": "dropped", "reason": "no reply within round_timeout",
                   "attempt": attempt, "bytes_up": 0, "bytes_down": size.message,
                   "payload_bytes_up": 0, "payload_bytes_down": size.payload}
            if off is not None and off <= st.start:  # offline when the round starts: never sent
                rec.update(status="offline", reason="offline when the round started (device availability)",
                           bytes_down=0, payload_bytes_down=0)
            else:
                self.bytes_down += size.message
                sent.append(msg)
            st.records.append(rec)
        return sent

    def collect(self, replies: Iterable[Message], attempt: int) -> list[Message]:
        """Measure and check replies; returns the valid ones sorted by client id."""
        st = self.current
        assert st is not None
        client_of = {n: c for c, n in self.node_of.items()}
        recs = {r["client"]: r for r in st.records if r["attempt"] == attempt}
        valid: dict[int, Message] = {}
        for rep in replies:
            c = client_of.get(int(rep.metadata.src_node_id))
            rec = recs.get(c) if c is not None else None
            if rec is None or rec["status"] != "dropped":
                continue  # not sent this attempt, or a duplicate
            size = MessageSize.of(rep)
            self.bytes_up += size.message
            rec.update(bytes_up=size.message, payload_bytes_up=size.payload)
            try:
                if rep.has_error():
                    raise FedAvgMessageError(rep.error.reason or "client error")
                n, m = check_reply(self.params, rep.content)
            except FedAvgMessageError as exc:
                rec.update(status="failed" if rep.has_error() else "excluded", reason=str(exc))
                st.rejected[c] = "failed" if rep.has_error() else "malformed"
                continue
            compute = float(m.get("compute-seconds", 0.0))
            peak = int(m.get("peak-memory-bytes", 0))
            rec.update(status="ok", reason=None, examples=n, train_loss=float(m["train-loss"]),
                       host_compute_seconds=compute, peak_memory_bytes=peak)
            valid[c] = rep
        # the simulated clock decides who is kept: deadline, over-commit, availability
        plan, fed = self.plan, self.fed
        timings = {}
        for c in sorted(valid):
            rec = recs[c]
            t = plan.timing(c, down_bytes=rec["bytes_down"], up_bytes=rec["bytes_up"], replay_entries=0,
                            host_seconds=rec["host_compute_seconds"],
                            examples=rec["examples"] * fed.fo_local_epochs)
            timings[c] = replace(t, offline_at=plan.offline_at(c, t, seed=fed.seed, round_=st.round,
                                                              attempt=attempt, start=st.start))
        sim = simulate_round(list(timings.values()), deadline=plan.deadline, keep=st.keep, start=st.start)
        kept = []
        for tl in sim.timelines:
            c = int(tl.client_id)
            rec = recs[c]
            rec.update(sim_start=tl.start, sim_download_end=tl.download_end, sim_replay_end=tl.replay_end,
                       sim_compute_end=tl.compute_end, sim_end=tl.end)
            if tl.status == "ok":
                kept.append(c)
                self.peak_client_memory = max(self.peak_client_memory, rec["peak_memory_bytes"])
                continue
            self.bytes_up -= rec["bytes_up"]  # the server no longer listens for this reply
            rec.update(status="late" if tl.status == "dropped" else tl.status, bytes_up=0, payload_bytes_up=0,
                       train_loss=None, reason={
                           "offline": f"went offline at simulated {tl.end:.3f} s before its upload ended "
                                      "(device availability)",
                           "late": f"finished at simulated {tl.upload_end:.3f} s, after the deadline of "
                                   f"{plan.deadline} s",
                           "dropped": f"over-commit: the first {st.keep} replies were already in"}[tl.status])
        st.round_sim += (sim.end - st.start) if timings else 0.0
        st.accepted = sorted(kept)
        return [valid[c] for c in st.accepted]

    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower calls this before round 1 and after every round: records are written here."""
        if server_round == 0:
            if self.done == 0:
                m = self.evaluate()
                self.run.append_metrics([self._round_record(0, [], m, 0.0)])
                return MetricRecord({"accuracy": float(m["accuracy"])})
            return None
        st = self.current
        assert st is not None and st.round == self.done + 1
        load_arrays(self.params, arrays)
        for r in st.records:
            if "sim_start" not in r:  # a client that did not deliver: its transfers on the clock
                start = self.sim_seconds
                if r["status"] == "offline":
                    tl = _timeline(replace(self.plan.timing(r["client"], down_bytes=0, up_bytes=0, replay_entries=0,
                                                            host_seconds=None), download_s=0.0, upload_s=0.0,
                                           compute_s=0.0), start, "offline")
                else:
                    tl = _timeline(replace(self.plan.timing(r["client"], down_bytes=r["bytes_down"],
                                                            up_bytes=r["bytes_up"], replay_entries=0,
                                                            host_seconds=None), compute_s=0.0), start, "dropped")
                r.update(host_compute_seconds=r.get("host_compute_seconds", 0.0),
                         peak_memory_bytes=r.get("peak_memory_bytes"), sim_start=tl.start,
                         sim_download_end=tl.download_end, sim_replay_end=tl.replay_end,
                         sim_compute_end=tl.compute_end, sim_end=tl.end)
        self.sim_seconds += st.round_sim
        self.host_seconds += time.perf_counter() - st.started
        m = None
        if st.round % self.fed.eval_every == 0 or st.round == self.fed.rounds:
            m = self.evaluate()
        for r in st.records:
            r.setdefault("train_loss", None)
        rec = self._round_record(st.round, st.records, m, st.round_sim)
        for r in st.records:
            r.pop("train_loss")
        self.run.append_metrics([*st.records, rec])
        self._save(st.round)
        self.done = st.round
        self.current = None
        return None if m is None else MetricRecord({"accuracy": float(m["accuracy"])})

    def _round_record(self, round_: int, clients: list[dict[str, Any]], m: dict[str, Any] | None,
                      round_sim: float) -> dict[str, Any]:
        st = self.current
        losses = [r["train_loss"] for r in clients if r.get("train_loss") is not None]
        return {
            "kind": "round", "round": round_, "sim_seconds": self.sim_seconds, "host_seconds": self.host_seconds,
            "bytes_up": sum(r["bytes_up"] for r in clients), "bytes_down": sum(r["bytes_down"] for r in clients),
            "bytes_up_total": self.bytes_up, "bytes_down_total": self.bytes_down,
            "payload_bytes_up": sum(r["payload_bytes_up"] for r in clients),
            "payload_bytes_down": sum(r["payload_bytes_down"] for r in clients),
            "train_loss": sum(losses) / len(losses) if losses else None,
            "eval_accuracy": None if m is None else m["accuracy"],
            "eval_macro_f1": None if m is None else m["macro_f1"],
            "participants": len(st.accepted) if st else 0, "round_sim_seconds": round_sim if round_ else None,
            "rejected": dict(sorted(st.rejected.items())) if st else {},
            "skipped": st.skipped if st else None, "history_entries": 0,
            **({f"{k}_labelled_estimate": v for k, v in estimated_transport_overhead(2 * len(clients)).items()}
               if round_ else {}),
        }

    def evaluate(self) -> dict[str, Any]:
        """Accuracy of the global model on the evaluation split."""
        return self.objective.classifier.evaluate(self.objective.eval, self.cfg.eval_batch_size)  # type: ignore[no-any-return]

    # -- driver ------------------------------------------------------------------------------
    def run_all(self, grid: Any) -> dict[str, Any]:
        """Handshake, then the remaining rounds through ``FedzoFedAvg.start``; returns the summary."""
        self.node_of = handshake(GridTransport(grid), self.setup_json, self.digest, self.fed.num_clients,
                                 self.fed.setup_timeout)
        write_fleet_files(self.run, self.plan)
        remaining = self.fed.rounds - self.done
        if remaining > 0:
            FedzoFedAvg(self).start(grid=grid, initial_arrays=params_to_arrays(self.params), num_rounds=remaining,
                                    timeout=self.fed.round_timeout, evaluate_fn=self.evaluate_fn)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """summary.json content (the same keys as a seeds-and-scalars run)."""
        s = {
            "name": self.cfg.name, "model": self.cfg.model, "optimizer": self.fed.optimizer, "method": "bp",
            "catch_up": None, "engine": self.engine, "rounds": self.fed.rounds, "peft": self.cfg.peft,
            "fo_local_epochs": self.fed.fo_local_epochs,
            **accuracy_summary(self.run.read_metrics()), "sim_seconds": self.sim_seconds,
            "host_seconds": self.host_seconds, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
            "peak_client_memory_bytes": self.peak_client_memory, "server_peak_rss_bytes": peak_rss_bytes(),
            "modelled_client_memory_bytes": self.plan.modelled_memory(),
            "excluded_clients": list(self.plan.excluded),
            "model_sha256": param_digest(self.params),
        }
        self.run.write_summary(s)
        return s


class FedzoFedAvg(FedAvg):
    """Flower's FedAvg with deterministic sampling, checked and sorted replies, and byte
    accounting (see the module docstring); aggregation is Flower's own."""

    def __init__(self, baseline: FedAvgBaseline) -> None:
        fed = baseline.fed
        super().__init__(fraction_train=fed.participants / fed.num_clients, fraction_evaluate=0.0,
                         min_train_nodes=fed.participants, min_evaluate_nodes=0,
                         min_available_nodes=fed.num_clients, weighted_by_key=WEIGHT_KEY,
                         arrayrecord_key=ARRAYS_KEY, configrecord_key=CONFIG_KEY)
        self.baseline = baseline
        self.offset = baseline.done  # rounds finished before this start (resume)
        self._grid: Any = None
        self._arrays: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Any) -> Iterable[Message]:
        """Sample the round's clients deterministically and build measured messages."""
        b = self.baseline
        round_ = self.offset + server_round
        b.current = RoundState(round_, time.perf_counter(), b.schedule(round_ - 1))
        self._grid, self._arrays = grid, arrays
        return b.messages(self, arrays, round_, attempt=0)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check, sort and count replies, then Flower's weighted average of the valid ones."""
        b = self.baseline
        st = b.current
        assert st is not None
        valid = b.collect(replies, attempt=0)
        fed = b.fed
        if len(valid) < fed.min_clients and fed.below_min == "retry":
            assert self._arrays is not None
            msgs = b.messages(self, self._arrays, st.round, attempt=1)
            valid = b.collect(self._grid.send_and_receive(msgs, timeout=fed.round_timeout), attempt=1)
        if len(valid) < fed.min_clients:
            st.skipped = (f"{len(valid)} valid replies < min_clients {fed.min_clients} (policy {fed.below_min}); "
                          "the global model is kept")
            st.accepted = []
            return None, None
        return super().aggregate_train(server_round, valid)


def run_fedavg(cfg: FederatedRunConfig, run: RunDir, grid: Any, *, resume: bool, engine: str,
               objective: Any | None = None, fleet: Any | None = None) -> dict[str, Any]:
    """Run (or resume) the FedAvg baseline of ``cfg`` over ``grid`` into ``run`` on ``fleet``
    (a scenario's FleetConfig; None: every client on the host stand-in)."""
    from fedzo.train import build_objective

    obj = objective if objective is not None else build_objective(cfg.objective_config())
    return FedAvgBaseline(cfg, run, obj, resume=resume, engine=engine, fleet=fleet).run_all(grid)
