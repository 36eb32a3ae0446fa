"""The round engine: one loop for every federated protocol.

Round ``r`` (every protocol, every engine):

1. sample the participants (a pure function of the run seed, the round and the attempt;
   over-commit samples more than it keeps) and ask the protocol for each one's message;
2. a device that is offline when the round starts never gets its message; the others
   are sent theirs over the :class:`~fedzo.federation.transports.base.Transport`;
3. replies are parsed by the protocol (invalid ones counted, never raised), each client's
   work is priced on the run's simulated :class:`~fedzo.devices.clock.Clock`, and the
   clock decides who is kept (deadline, over-commit, availability);
4. fewer than ``min_clients`` kept: the round is skipped, or retried once with a fresh
   sample (``below_min: retry``);
5. the protocol aggregates the kept updates and commits them (the seeds-and-scalars log
   line, or the FedAvg weights), the global model is evaluated every E rounds, and the
   typed records (:mod:`fedzo.records`) are appended to the run directory; then the
   protocol checkpoints what it keeps outside the log.

The protocol is a plug-in (:class:`RoundProtocol`): :mod:`fedzo.federation.server.protocols.zo`
(seeds and scalars) and :mod:`fedzo.federation.server.protocols.fedavg` (FedAvg with backprop).
A killed run resumes from the last round present both in the protocol's durable state
and in the metrics, and continues bitwise as if it had never stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic

from flwr.app import Message

from fedzo.config.scenario import Scenario
from fedzo.devices.clock import ClientTimeline, ClientTiming, ClientWork, Clock, Status, simulate_round
from fedzo.federation.fleet import FleetPlan, memory_frontier
from fedzo.federation.server.protocols.base import RoundProtocol, U
from fedzo.federation.server.replies import Collected, collect_replies
from fedzo.federation.server.sampling import sample_clients, skip_reason
from fedzo.federation.server.totals import Totals
from fedzo.federation.setup import ClientSetup
from fedzo.federation.transports.base import Membership, Transport, handshake
from fedzo.federation.transports.faults import fault_totals, round_fault_counts, with_faults
from fedzo.federation.wire.bytes import MessageSize, estimated_transport_overhead
from fedzo.killpoints import kill_point
from fedzo.records import (
    ClientRecord,
    ClientStatus,
    FleetRecord,
    RoundRecord,
    Summary,
    accuracy_summary,
    bytes_by_kind,
    eval_fields,
)
from fedzo.runs import AnyRecord, RunDir, peak_rss_bytes


def _timeline(t: ClientTiming, start: float, status: Status) -> ClientTimeline:
    """Absolute times of a client that is not part of the keep/deadline decision."""
    d = start + t.download_s
    r = d + t.replay_s
    c = r + t.compute_s
    u = c + t.upload_s
    return ClientTimeline(t.client_id, start, d, r, c, u, status, u)


@dataclass
class Attempt(Generic[U]):
    """One try of a round: its client records, the kept updates, and how long it took."""

    records: list[ClientRecord] = field(default_factory=list)
    accepted: dict[int, U] = field(default_factory=dict)
    synced: list[int] = field(default_factory=list)  # clients whose worker reached global(r - 1)
    rejected: dict[int, str] = field(default_factory=dict)
    duration: float = 0.0
    unknown_replies: int = 0
    duplicate_bytes: int = 0  # surplus replies the server received
    batching: str | None = None  # how the batched engine ran the attempt's local steps


@dataclass
class _Sent:
    size: MessageSize
    catch_up_entries: int
    catch_up_bytes: int
    message: Message


@dataclass
class _Seen:
    """What the engine knows of one sampled client in an attempt."""

    sent: _Sent | None  # None: offline at the start, never sent
    up: MessageSize | None = None  # its reply's size (the one picked)
    work: ClientWork | None = None
    timing: ClientTiming | None = None
    line: ClientTimeline | None = None  # its timeline when it replied validly
    fault: str | None = None


IN_SERVER = ("inprocess", "batched")  # engines whose clients run in the server's process


class RoundEngine(Generic[U]):
    """Drives a protocol through the rounds of a scenario over a transport."""

    def __init__(self, scenario: Scenario, run: RunDir, plan: FleetPlan, protocol: RoundProtocol[U],
                 *, engine: str) -> None:
        self.scenario = scenario
        self.fed = scenario.federation
        self.run = run
        self.plan = plan
        self.clock: Clock = plan.clock
        self.protocol = protocol
        self.engine = engine
        self.members = Membership({}, set(), "", "", 0.0)
        self.setup_bytes = (0, 0)  # (up, down) of a handshake not yet in a round record
        self.totals = Totals()
        self.done = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, resume: bool) -> None:
        """Start the protocol's state; on ``resume`` continue from the last round both the
        protocol's durable state and the metrics hold (later records are dropped)."""
        if not resume:
            self.protocol.open(self.run, False, 0, [])
            return
        records = self.run.records()
        last = max((r.round for r in records if isinstance(r, RoundRecord)), default=0)
        clients = [r for r in records if isinstance(r, ClientRecord)]
        done = self.protocol.open(self.run, True, last, clients)
        kept = self.run.truncate_metrics(done)
        self.totals = Totals.from_records(kept)
        self.done = max(done, 0)

    def run_all(self, transport: Transport) -> Summary:
        """Handshake, then the remaining rounds; returns the summary (also written)."""
        transport = with_faults(transport, self.scenario.faults, self.scenario.federation.num_clients)
        hs = handshake(transport, self.protocol.setup_json, self.protocol.digest, self.fed.num_clients,
                       self.fed.setup_timeout, measured_json=ClientSetup(self.scenario).to_json())
        self.members = Membership(hs.node_of, set(transport.node_ids(0, 0.0)) | set(hs.node_of.values()),
                                  self.protocol.setup_json, self.protocol.digest, self.fed.setup_timeout,
                                  ClientSetup(self.scenario).to_json())
        kill_point("handshake-done")
        self.write_fleet_files()
        kill_point("fleet-recorded")
        if not self.run.rounds():
            # a resumed run's handshake is the interruption's cost, not the experiment's: not counted
            self.setup_bytes = (hs.bytes_up, hs.bytes_down)
            self.totals.bytes_up += hs.bytes_up
            self.totals.bytes_down += hs.bytes_down
            m = self.protocol.evaluate()
            kill_point("round0-evaluated")
            self.run.append([RoundRecord(round=0, sim_seconds=0.0, host_seconds=0.0, **self._byte_fields([], 0),
                                         **eval_fields(m))])
        for r in range(self.done + 1, self.fed.rounds + 1):
            self.run_round(transport, r)
        return self.summary()

    def write_fleet_files(self) -> None:
        """``memory_frontier.json`` and the ``kind: fleet`` record (once per run directory)."""
        tmp = self.run.path / "memory_frontier.json.tmp"
        tmp.write_text(json.dumps(memory_frontier(self.plan), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(self.run.path / "memory_frontier.json")
        if not any(isinstance(r, FleetRecord) for r in self.run.records()):
            if self.scenario.fleet is not None and self.scenario.fleet.measure_memory:
                self.plan.measure_memory(self.scenario)
            self.run.append([self.plan.record()])

    # -- a round ----------------------------------------------------------------------------
    def run_round(self, transport: Transport, round_: int) -> Attempt[U]:
        """One round end to end: attempts, commit, evaluation, records, checkpoint."""
        fed = self.fed
        t0 = time.perf_counter()
        kill_point("round-start", round_)
        if self.engine == "deployment":  # restarted SuperNodes come back under new ids
            up, down = self.members.refresh(transport)
            self.setup_bytes = (self.setup_bytes[0] + up, self.setup_bytes[1] + down)
            self.totals.bytes_up += up
            self.totals.bytes_down += down
        self.protocol.begin_round(round_)
        records: list[ClientRecord] = []
        round_sim = 0.0
        unknown = duplicates = 0
        synced: set[int] = set()
        batching: list[str] = []
        attempts = 2 if fed.below_min == "retry" else 1
        for attempt in range(attempts):
            result = self._attempt(transport, round_, attempt, self.totals.sim_seconds + round_sim)
            records += result.records
            round_sim += result.duration
            unknown += result.unknown_replies
            duplicates += result.duplicate_bytes
            synced |= set(result.synced)
            batching += [result.batching] if result.batching else []
            if len(result.accepted) >= fed.min_clients:
                break
        skipped = None
        if len(result.accepted) < fed.min_clients:
            skipped = skip_reason(result.records, len(result.accepted), fed.min_clients, fed.below_min)
            result.accepted = {}
        kill_point("replies-in", round_)
        t_commit = time.perf_counter()
        self.protocol.commit(round_, result.accepted, sorted(synced))
        commit_seconds = time.perf_counter() - t_commit
        kill_point("committed", round_)
        self.totals.sim_seconds += round_sim
        self.totals.host_seconds += time.perf_counter() - t0
        kill_point("evaluating", round_)
        m = self.protocol.evaluate() if round_ % fed.eval_every == 0 or round_ == fed.rounds else None
        kill_point("evaluated", round_)
        rec = self._round_record(round_, records, result, m, round_sim, commit_seconds, skipped, unknown, duplicates)
        rec = rec.model_copy(update={"batching": "; ".join(batching) or None})
        self.run.append([*records, rec])
        kill_point("metrics-appended", round_)
        self.protocol.checkpoint(round_)
        kill_point("checkpointed", round_)
        self.done = round_
        return result

    def _send(self, transport: Transport, round_: int, attempt: int, start: float,
              clients: list[int]) -> tuple[list[Message], dict[int, _Sent], set[int]]:
        """Build every participant's message; those offline at the start are not sent."""
        msgs: list[Message] = []
        sent: dict[int, _Sent] = {}
        offline: set[int] = set()
        for c in clients:
            out = self.protocol.downlink(round_, c)
            msg = transport.new_message(out.content, self.members.node_of[c], round_)
            if self.clock.offline_at_start(c, round_=round_, attempt=attempt, start=start):
                offline.add(c)
                continue
            size = MessageSize.of(msg)
            msgs.append(msg)
            sent[c] = _Sent(size, out.catch_up_entries, out.catch_up_bytes, msg)
        return msgs, sent, offline

    def _attempt(self, transport: Transport, round_: int, attempt: int, start: float) -> Attempt[U]:
        """One try of a round starting at simulated time ``start``."""
        count, keep = self.plan.sample_sizes(self.fed.participants)
        clients = sample_clients(self.scenario.seed, round_, self.fed.num_clients, count, attempt,
                                 eligible=self.plan.eligible)
        msgs, sent, _ = self._send(transport, round_, attempt, start, clients)
        kill_point("downlinks-built", round_)
        replies = transport.exchange(msgs, self.fed.round_timeout) if msgs else []
        batching = getattr(transport, "last_batching", None) if msgs else None
        client_of_node = {self.members.node_of[c]: c for c in sent}
        client_of_message = {s.message.metadata.message_id: c for c, s in sent.items() if s.message.metadata.message_id}
        got = collect_replies(replies, client_of_node, lambda c, content: self.protocol.parse(round_, c, content),
                              client_of_message)
        for c, err in self.protocol.screen(round_, got.updates).items():
            got.reject(c, err.code, str(err))
        injected = getattr(transport, "injected", {})
        seen = {c: _Seen(sent.get(c), fault=injected.get(c)) for c in clients}
        for c, s in seen.items():
            if s.sent is None:
                continue
            s.up = MessageSize.of(got.messages[c], reply_to=s.sent.message) if c in got.messages else None
            s.work = self.protocol.work(round_, c, got.updates.get(c), s.sent.size.wire,
                                        s.up.wire if s.up else 0, s.sent.catch_up_entries)
            t = self.clock.timing(c, s.work)
            s.timing = replace(t, offline_at=self.clock.offline_at(c, t, round_=round_, attempt=attempt, start=start))
        replied = [timing for c in sorted(got.updates) if (timing := seen[c].timing) is not None]
        sim = simulate_round(replied, deadline=self.plan.deadline, keep=keep, start=start)
        for tl in sim.timelines:
            seen[int(tl.client_id)].line = tl
        out = Attempt[U](rejected=dict(got.rejected), synced=sorted(got.updates), unknown_replies=got.unknown,
                         batching=batching)
        out.duplicate_bytes = sum(MessageSize.of(m, reply_to=sent[c].message).wire
                                  for c, extra in got.surplus.items() for m in extra)
        self.totals.bytes_up += out.duplicate_bytes
        round_end = sim.end if sim.timelines else start
        for c in clients:
            rec, end = self._client_record(round_, attempt, c, start, keep, seen[c], got)
            round_end = max(round_end, end)
            if rec.status == "ok":
                out.accepted[c] = got.updates[c]
                self.totals.peak_client_memory = max(self.totals.peak_client_memory, rec.peak_memory_bytes or 0)
            self.totals.bytes_down += rec.bytes_down
            self.totals.bytes_up += rec.bytes_up
            out.records.append(rec)
        out.duration = round_end - start
        return out

    def _client_record(self, round_: int, attempt: int, c: int, start: float, keep: int | None, seen: _Seen,
                       got: Collected[U]) -> tuple[ClientRecord, float]:
        """A client's record and the latest simulated time it holds the round open."""
        end = start
        upd = got.updates.get(c)
        down = seen.sent.size if seen.sent is not None else MessageSize(0, 0)
        up = seen.up or MessageSize(0, 0)
        tl = seen.line
        reason: str | None
        status: ClientStatus
        if seen.sent is None:
            status, reason = "offline", "offline when the round started (device availability)"
            tl = ClientTimeline(str(c), start, start, start, start, start, "offline", start)
        elif tl is not None:
            status = "late" if tl.status == "dropped" else tl.status
            reason = self._outcome_reason(tl, keep)
            if status != "ok":
                up = MessageSize(0, 0)  # the server no longer listens for this reply
        else:  # no reply, or a reply the server rejected: its transfers on the clock
            assert seen.timing is not None
            tl = _timeline(seen.timing, start, "dropped")
            if c in got.rejected:
                status = "failed" if got.rejected[c] == "failed" else "excluded"
                reason = got.reasons[c]
                deadline = self.plan.deadline
                end = min(tl.upload_end, start + deadline) if deadline is not None else tl.upload_end
            else:
                status, reason = "dropped", "no reply within round_timeout"
        return ClientRecord(
            round=round_, client=c, device=self.plan.names[c], status=status, reason=reason, attempt=attempt,
            bytes_up=up.wire, bytes_down=down.wire, payload_bytes_up=up.payload,
            payload_bytes_down=down.payload, sim_start=tl.start, sim_download_end=tl.download_end,
            sim_replay_end=tl.replay_end, sim_compute_end=tl.compute_end, sim_end=tl.end,
            catch_up_entries=seen.sent.catch_up_entries if seen.sent is not None else 0, synced=upd is not None,
            catch_up_bytes_down=seen.sent.catch_up_bytes if seen.sent is not None else 0,
            batches=list(seen.work.batches) if seen.work is not None else [],
            examples=upd.num_examples if upd is not None else None,
            host_compute_seconds=upd.compute_seconds if upd is not None else 0.0,
            peak_memory_bytes=upd.peak_memory_bytes if upd is not None else None,
            fault=seen.fault, extra_replies=got.extras.get(c, [])), end

    def _outcome_reason(self, tl: ClientTimeline, keep: int | None) -> str | None:
        return {
            "ok": None,
            "offline": f"went offline at simulated {tl.end:.3f} s before its upload ended (device availability)",
            "late": f"finished at simulated {tl.upload_end:.3f} s, after the deadline of {self.plan.deadline} s",
            "dropped": f"over-commit: the first {keep} replies were already in",
        }[tl.status]

    def _byte_fields(self, records: list[ClientRecord], duplicates: int) -> dict[str, Any]:
        """A round record's bytes: this round's by kind (and the handshake not yet recorded), totals."""
        kinds: dict[str, tuple[int, int]] = {}

        def add(kind: str, up: int, down: int) -> None:
            if up or down:
                u, d = kinds.get(kind, (0, 0))
                kinds[kind] = (u + up, d + down)

        add("setup", *self.setup_bytes)
        self.setup_bytes = (0, 0)
        for r in records:
            if r.attempt > 0:
                add("retry", r.bytes_up, r.bytes_down)
            else:
                add("train", r.bytes_up, r.bytes_down - r.catch_up_bytes_down)
                add("catch_up", 0, r.catch_up_bytes_down)
        add("duplicate", duplicates, 0)
        return {"bytes_up": sum(u for u, _ in kinds.values()), "bytes_down": sum(d for _, d in kinds.values()),
                "bytes_up_total": self.totals.bytes_up, "bytes_down_total": self.totals.bytes_down,
                "bytes_by_kind": dict(sorted(kinds.items()))}

    def _round_record(self, round_: int, records: list[ClientRecord], result: Attempt[U], m: dict[str, Any] | None,
                      round_sim: float, commit_seconds: float, skipped: str | None, unknown: int,
                      duplicates: int) -> RoundRecord:
        losses = [result.accepted[c].train_loss for c in sorted(result.accepted)]
        overhead = estimated_transport_overhead(2 * len(records))
        return RoundRecord(
            round=round_, sim_seconds=self.totals.sim_seconds, host_seconds=self.totals.host_seconds,
            server_replay_seconds=commit_seconds, **self._byte_fields(records, duplicates),
            payload_bytes_up=sum(r.payload_bytes_up for r in records),
            payload_bytes_down=sum(r.payload_bytes_down for r in records),
            train_loss=sum(losses) / len(losses) if losses else None,
            **eval_fields(m),
            participants=len(result.accepted), round_sim_seconds=round_sim,
            late=sorted(r.client for r in records if r.status == "late"),
            offline=sorted(r.client for r in records if r.status == "offline"),
            rejected=dict(sorted(result.rejected.items())), skipped=skipped,
            **self.protocol.round_fields(), **round_fault_counts(records, unknown),
            **{f"{k}_labelled_estimate": v for k, v in overhead.items()})

    # -- the end ----------------------------------------------------------------------------
    @staticmethod
    def _measured_memory(records: Sequence[AnyRecord]) -> int | None:
        fleet = [r for r in records if isinstance(r, FleetRecord)]
        return fleet[0].measured_client_memory_bytes if fleet else None

    def summary(self) -> Summary:
        """summary.json content (also written)."""
        records = self.run.records()
        s = Summary(
            name=self.scenario.name, model=self.scenario.model.name, optimizer=self.scenario.optimizer.name,
            method=self.protocol.method, peft=self.scenario.model.peft, dtype=self.scenario.model.dtype,
            engine=self.engine, rounds=self.fed.rounds,
            rounds_trained=sum(1 for r in records if isinstance(r, RoundRecord) and r.round > 0 and r.participants),
            **accuracy_summary(records), sim_seconds=self.totals.sim_seconds, sim_time_basis=self.clock.basis,
            host_seconds=self.totals.host_seconds, bytes_up=self.totals.bytes_up, bytes_down=self.totals.bytes_down,
            bytes_by_kind=bytes_by_kind(records),
            peak_client_memory_bytes=self.totals.peak_client_memory if self.engine not in IN_SERVER else None,
            server_peak_rss_bytes=peak_rss_bytes(), measured_client_memory_bytes=self._measured_memory(records),
            modelled_client_memory_bytes=self.plan.modelled_memory(), excluded_clients=list(self.plan.excluded),
            faults=fault_totals(records), **self.protocol.summary_fields())
        self.run.write_summary(s)
        return s
