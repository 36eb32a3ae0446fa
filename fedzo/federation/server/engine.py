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
from dataclasses import dataclass, field, replace
from typing import Generic

from flwr.app import Message

from fedzo.config.scenario import Scenario
from fedzo.devices.clock import Clock, simulate_round
from fedzo.federation.fleet import FleetPlan, memory_frontier
from fedzo.federation.server.accounting import Accounts, Seen, Sent, Totals
from fedzo.federation.server.protocols.base import RoundProtocol, U
from fedzo.federation.server.replies import collect_replies
from fedzo.federation.server.sampling import sample_clients, skip_reason
from fedzo.federation.setup import ClientSetup
from fedzo.federation.transports.base import Membership, Transport, handshake
from fedzo.federation.transports.faults import with_faults
from fedzo.federation.wire.bytes import MessageSize
from fedzo.killpoints import kill_point
from fedzo.records import ClientRecord, FleetRecord, RoundRecord, Summary
from fedzo.runs import RunDir
from fedzo.tasks.forward import compiled_shapes


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
    joint_seconds: float | None = None  # host seconds in the batched engine's joint forward passes


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
        self.accounts = Accounts(plan)
        self.clients_in_server = False  # the transport's, known in run_all
        self.done = 0

    @property
    def totals(self) -> Totals:
        """The run's running totals (the accounts')."""
        return self.accounts.totals

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
        self.accounts.resume(self.run.truncate_metrics(done))
        self.done = max(done, 0)

    def run_all(self, transport: Transport) -> Summary:
        """Handshake, then the remaining rounds; returns the summary (also written)."""
        transport = with_faults(transport, self.scenario.faults, self.scenario.federation.num_clients)
        self.clients_in_server = transport.clients_in_server
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
            self.accounts.setup(hs.bytes_up, hs.bytes_down)
            m = self.protocol.evaluate()
            kill_point("round0-evaluated")
            self.run.append([self.accounts.round_zero(m, compiled_shapes())])
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
        if transport.nodes_restart:  # restarted SuperNodes come back under new ids
            self.accounts.setup(*self.members.refresh(transport))
        self.protocol.begin_round(round_)
        records: list[ClientRecord] = []
        round_sim = 0.0
        unknown = duplicates = 0
        synced: set[int] = set()
        batching: list[str] = []
        joint: list[float] = []
        attempts = 2 if fed.below_min == "retry" else 1
        for attempt in range(attempts):
            result = self._attempt(transport, round_, attempt, self.totals.sim_seconds + round_sim)
            records += result.records
            round_sim += result.duration
            unknown += result.unknown_replies
            duplicates += result.duplicate_bytes
            synced |= set(result.synced)
            batching += [result.batching] if result.batching else []
            joint += [result.joint_seconds] if result.joint_seconds is not None else []
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
        rec = self.accounts.round_record(
            round_, records, losses=[result.accepted[c].train_loss for c in sorted(result.accepted)],
            participants=len(result.accepted), rejected=result.rejected, metrics=m, round_sim=round_sim,
            commit_seconds=commit_seconds, skipped=skipped, unknown=unknown, duplicates=duplicates,
            protocol_fields=self.protocol.round_fields(), batching="; ".join(batching) or None,
            joint_forward_seconds=sum(joint) if joint else None, compiled_shapes=compiled_shapes())
        self.run.append([*records, rec])
        kill_point("metrics-appended", round_)
        self.protocol.checkpoint(round_)
        kill_point("checkpointed", round_)
        self.done = round_
        return result

    def _send(self, transport: Transport, round_: int, attempt: int, start: float,
              clients: list[int]) -> tuple[list[Message], dict[int, Sent], set[int]]:
        """Build every participant's message; those offline at the start are not sent."""
        msgs: list[Message] = []
        sent: dict[int, Sent] = {}
        offline: set[int] = set()
        for c in clients:
            out = self.protocol.downlink(round_, c)
            msg = transport.new_message(out.content, self.members.node_of[c], round_)
            if self.clock.offline_at_start(c, round_=round_, attempt=attempt, start=start):
                offline.add(c)
                continue
            size = MessageSize.of(msg)
            msgs.append(msg)
            sent[c] = Sent(size, out.catch_up_entries, out.catch_up_bytes, msg)
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
        joint_seconds = getattr(transport, "last_joint_seconds", None) if msgs else None
        client_of_node = {self.members.node_of[c]: c for c in sent}
        client_of_message = {s.message.metadata.message_id: c for c, s in sent.items() if s.message.metadata.message_id}
        got = collect_replies(replies, client_of_node, lambda c, content: self.protocol.parse(round_, c, content),
                              client_of_message)
        for c, err in self.protocol.screen(round_, got.updates).items():
            got.reject(c, err.code, str(err))
        injected = getattr(transport, "injected", {})
        seen = {c: Seen(sent.get(c), fault=injected.get(c)) for c in clients}
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
                         batching=batching, joint_seconds=joint_seconds)
        out.duplicate_bytes = sum(MessageSize.of(m, reply_to=sent[c].message).wire
                                  for c, extra in got.surplus.items() for m in extra)
        self.accounts.duplicates(out.duplicate_bytes)
        round_end = sim.end if sim.timelines else start
        for c in clients:
            rec, end = self.accounts.client(round_, attempt, c, start, keep, seen[c], got)
            round_end = max(round_end, end)
            if rec.status == "ok":
                out.accepted[c] = got.updates[c]
            out.records.append(rec)
        out.duration = round_end - start
        return out

    # -- the end ----------------------------------------------------------------------------
    def summary(self) -> Summary:
        """summary.json content (also written)."""
        s = self.accounts.summary(self.scenario, self.run.records(), method=self.protocol.method,
                                  engine=self.engine, clients_in_server=self.clients_in_server,
                                  protocol_fields=self.protocol.summary_fields(), sim_time_basis=self.clock.basis)
        self.run.write_summary(s)
        return s
