"""The run's accounts: the one place that sums time, bytes and memory and builds the
records a round writes (:mod:`fedzo.records`).

The round loop (:mod:`fedzo.federation.server.engine`) tells the accounts what happened:
a handshake's bytes, each sampled client's message sizes, priced timing and outcome, the
surplus replies, the committed round; the accounts keep the running :class:`Totals` and
turn each event into its :class:`~fedzo.records.ClientRecord`, the round's
:class:`~fedzo.records.RoundRecord` (bytes by kind: setup, train, catch_up, retry,
duplicate) and the run's :class:`~fedzo.records.Summary`. On resume the totals are rebuilt
from the records kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import Message

from fedzo.config.scenario import Scenario
from fedzo.devices.clock import ClientTimeline, ClientTiming, ClientWork, ClockBasis, Status
from fedzo.federation.fleet import FleetPlan
from fedzo.federation.server.replies import Collected
from fedzo.federation.transports.faults import fault_totals, round_fault_counts
from fedzo.federation.wire.bytes import MessageSize, estimated_transport_overhead
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
from fedzo.runs import AnyRecord, peak_rss_bytes


@dataclass
class Totals:
    """Running totals of a run (rebuilt from the records on resume)."""

    sim_seconds: float = 0.0
    host_seconds: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    peak_client_memory: int = 0

    @classmethod
    def from_records(cls, kept: Sequence[AnyRecord]) -> Totals:
        """The totals after the last kept round."""
        rounds = [r for r in kept if isinstance(r, RoundRecord)]
        peaks = [r.peak_memory_bytes or 0 for r in kept if isinstance(r, ClientRecord)]
        if not rounds:
            return cls(peak_client_memory=max(peaks, default=0))
        last = rounds[-1]
        return cls(last.sim_seconds or 0.0, last.host_seconds or 0.0, last.bytes_up_total or 0,
                   last.bytes_down_total or 0, max(peaks, default=0))


@dataclass
class Sent:
    """A message sent to a client: its size, and the catch-up it carried."""

    size: MessageSize
    catch_up_entries: int
    catch_up_bytes: int
    message: Message


@dataclass
class Seen:
    """What the round knows of one sampled client in an attempt."""

    sent: Sent | None  # None: offline at the start, never sent
    up: MessageSize | None = None  # its reply's size (the one picked)
    work: ClientWork | None = None
    timing: ClientTiming | None = None
    line: ClientTimeline | None = None  # its timeline when it replied validly
    fault: str | None = None


def _timeline(t: ClientTiming, start: float, status: Status) -> ClientTimeline:
    """Absolute times of a client that is not part of the keep/deadline decision."""
    d = start + t.download_s
    r = d + t.replay_s
    c = r + t.compute_s
    u = c + t.upload_s
    return ClientTimeline(t.client_id, start, d, r, c, u, status, u)


class Accounts:
    """The running totals of one run and the records built from them."""

    def __init__(self, plan: FleetPlan) -> None:
        self.plan = plan
        self.totals = Totals()
        self.pending_setup = (0, 0)  # (up, down) of handshakes not yet in a round record

    def resume(self, kept: Sequence[AnyRecord]) -> None:
        """Continue from the records a resumed run keeps."""
        self.totals = Totals.from_records(kept)

    def setup(self, up: int, down: int) -> None:
        """A handshake's bytes (recorded with the next round)."""
        self.pending_setup = (self.pending_setup[0] + up, self.pending_setup[1] + down)
        self.totals.bytes_up += up
        self.totals.bytes_down += down

    def duplicates(self, wire_bytes: int) -> None:
        """Surplus replies the server received."""
        self.totals.bytes_up += wire_bytes

    def client(self, round_: int, attempt: int, c: int, start: float, keep: int | None, seen: Seen,
               got: Collected[Any]) -> tuple[ClientRecord, float]:
        """A client's record, counted into the totals, and the latest simulated time it holds
        the round open."""
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
        rec = ClientRecord(
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
            fault=seen.fault, extra_replies=got.extras.get(c, []))
        if rec.status == "ok":
            self.totals.peak_client_memory = max(self.totals.peak_client_memory, rec.peak_memory_bytes or 0)
        self.totals.bytes_down += rec.bytes_down
        self.totals.bytes_up += rec.bytes_up
        return rec, end

    def _outcome_reason(self, tl: ClientTimeline, keep: int | None) -> str | None:
        return {
            "ok": None,
            "offline": f"went offline at simulated {tl.end:.3f} s before its upload ended (device availability)",
            "late": f"finished at simulated {tl.upload_end:.3f} s, after the deadline of {self.plan.deadline} s",
            "dropped": f"over-commit: the first {keep} replies were already in",
        }[tl.status]

    def byte_fields(self, records: Sequence[ClientRecord], duplicates: int) -> dict[str, Any]:
        """A round record's bytes: this round's by kind (and the handshakes not yet recorded), totals."""
        kinds: dict[str, tuple[int, int]] = {}

        def add(kind: str, up: int, down: int) -> None:
            if up or down:
                u, d = kinds.get(kind, (0, 0))
                kinds[kind] = (u + up, d + down)

        add("setup", *self.pending_setup)
        self.pending_setup = (0, 0)
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

    def round_zero(self, metrics: dict[str, Any] | None, compiled_shapes: int | None = None) -> RoundRecord:
        """The record of the initial model's evaluation (with the first handshake's bytes)."""
        return RoundRecord(round=0, sim_seconds=0.0, host_seconds=0.0, **self.byte_fields([], 0),
                           **eval_fields(metrics), compiled_shapes=compiled_shapes)

    def round_record(self, round_: int, records: Sequence[ClientRecord], *, losses: Sequence[float],
                     participants: int, rejected: dict[int, str], metrics: dict[str, Any] | None,
                     round_sim: float, commit_seconds: float, skipped: str | None, unknown: int,
                     duplicates: int, protocol_fields: dict[str, Any], batching: str | None,
                     joint_forward_seconds: float | None, compiled_shapes: int | None = None) -> RoundRecord:
        """A committed round's record."""
        overhead = estimated_transport_overhead(2 * len(records))
        return RoundRecord(
            round=round_, sim_seconds=self.totals.sim_seconds, host_seconds=self.totals.host_seconds,
            server_replay_seconds=commit_seconds, batching=batching, joint_forward_seconds=joint_forward_seconds,
            compiled_shapes=compiled_shapes,
            **self.byte_fields(records, duplicates),
            payload_bytes_up=sum(r.payload_bytes_up for r in records),
            payload_bytes_down=sum(r.payload_bytes_down for r in records),
            train_loss=sum(losses) / len(losses) if losses else None,
            **eval_fields(metrics),
            participants=participants, round_sim_seconds=round_sim,
            late=sorted(r.client for r in records if r.status == "late"),
            offline=sorted(r.client for r in records if r.status == "offline"),
            rejected=dict(sorted(rejected.items())), skipped=skipped,
            **protocol_fields, **round_fault_counts(records, unknown),
            **{f"{k}_labelled_estimate": v for k, v in overhead.items()})

    def summary(self, scenario: Scenario, records: Sequence[AnyRecord], *, method: str, engine: str,
                clients_in_server: bool, protocol_fields: dict[str, Any], sim_time_basis: ClockBasis) -> Summary:
        """The run's summary; a client's measured peak memory only where clients ran in
        processes of their own (``clients_in_server``: they shared the server's)."""
        fleet = [r for r in records if isinstance(r, FleetRecord)]
        return Summary(
            name=scenario.name, model=scenario.model.name, optimizer=scenario.optimizer.name,
            method=method, peft=scenario.model.peft, dtype=scenario.model.dtype,
            engine=engine, rounds=scenario.federation.rounds,
            rounds_trained=sum(1 for r in records if isinstance(r, RoundRecord) and r.round > 0 and r.participants),
            **accuracy_summary(records), sim_seconds=self.totals.sim_seconds, sim_time_basis=sim_time_basis,
            host_seconds=self.totals.host_seconds, bytes_up=self.totals.bytes_up, bytes_down=self.totals.bytes_down,
            bytes_by_kind=bytes_by_kind(records),
            peak_client_memory_bytes=None if clients_in_server else self.totals.peak_client_memory,
            server_peak_rss_bytes=peak_rss_bytes(),
            measured_client_memory_bytes=fleet[0].measured_client_memory_bytes if fleet else None,
            modelled_client_memory_bytes=self.plan.modelled_memory(), excluded_clients=list(self.plan.excluded),
            faults=fault_totals(records), **protocol_fields)
