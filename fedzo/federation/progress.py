"""A progress bar per federated round, fed by the round records as they reach metrics.jsonl."""

from __future__ import annotations

from collections.abc import Sequence

from fedzo.records import RoundRecord
from fedzo.runs import AnyRecord, RunDir
from fedzo.units import format_bytes


class RoundProgress:
    """tqdm bar over rounds showing accuracy, loss, simulated time and bytes so far.

    Attach with :meth:`attach`; it reads only ``kind: round`` records, so it works for the
    seeds-and-scalars server and the FedAvg baseline alike, and on resume starts at the
    rounds already done.
    """

    def __init__(self, name: str, rounds: int, done: int, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=rounds, initial=done, desc=name, unit="round", disable=not enabled,
                        dynamic_ncols=True)
        self.accuracy: float | None = None

    def attach(self, run: RunDir) -> RoundProgress:
        """Listen to ``run``'s appended metric records."""
        run.on_append(self.update)
        return self

    def update(self, records: Sequence[AnyRecord]) -> None:
        """Advance one step per round record (round 0, the initial evaluation, only sets accuracy)."""
        for rec in records:
            if not isinstance(rec, RoundRecord):
                continue
            if rec.eval_accuracy is not None:
                self.accuracy = rec.eval_accuracy
            loss = rec.train_loss
            self.bar.set_postfix_str(
                f"acc {'-' if self.accuracy is None else f'{self.accuracy:.3f}'}, "
                f"loss {'-' if loss is None else f'{loss:.4f}'}, "
                f"sim {rec.sim_seconds or 0.0:.1f} s, "
                f"up {format_bytes(rec.bytes_up_total or 0)}, down {format_bytes(rec.bytes_down_total or 0)}",
                refresh=False)
            if rec.round > 0:
                self.bar.update(1)
            else:
                self.bar.refresh()

    def close(self) -> None:
        """Finish the bar."""
        self.bar.close()
