"""Running totals of a federated run: simulated and host time, bytes, client memory peaks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedzo.records import ClientRecord, RoundRecord
from fedzo.runs import AnyRecord


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
