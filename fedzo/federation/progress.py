"""Progress per federated round, fed by the round records as they reach metrics.jsonl: a
bar on a terminal, or one plain line per round (``--no-progress``, CI logs)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Literal, TextIO

from fedzo.records import RoundRecord
from fedzo.runs import AnyRecord, RunDir
from fedzo.units import format_bytes


def describe(rec: RoundRecord, rounds: int) -> str:
    """``round 3/6: accuracy 0.870 [0.790, 0.922] (n 100), simulated 138.0 s, up 1.8 kB, down 8.4 kB``."""
    parts: list[str] = []
    if rec.round > 0 and rec.participants == 0:
        parts.append("no client trained" + (f" ({rec.skipped})" if rec.skipped else ""))
    if rec.eval_accuracy is not None:
        interval = (f" [{rec.eval_accuracy_low:.3f}, {rec.eval_accuracy_high:.3f}] (n {rec.eval_n})"
                    if rec.eval_accuracy_low is not None and rec.eval_accuracy_high is not None else "")
        parts.append(f"accuracy {rec.eval_accuracy:.3f}{interval}")
    if rec.sim_seconds is not None:
        parts.append(f"simulated {rec.sim_seconds:.1f} s")
    parts.append(f"up {format_bytes(rec.bytes_up_total or 0)}, down {format_bytes(rec.bytes_down_total or 0)}")
    return f"round {rec.round}/{rounds}: " + ", ".join(parts)


Mode = Literal["bar", "lines", "none"]


class RoundProgress:
    """``bar``: a tqdm bar over rounds (accuracy, loss, simulated time, bytes so far), on
    a terminal (piped to a file it becomes ``lines``); ``lines``: one line per round on
    ``stream``; ``none``: silent.

    Attach with :meth:`attach`; it reads only ``kind: round`` records, so it works for the
    seeds-and-scalars server and the FedAvg baseline alike, and on resume starts at the
    rounds already done.
    """

    def __init__(self, name: str, rounds: int, done: int, mode: Mode = "bar", stream: TextIO | None = None) -> None:
        from tqdm.auto import tqdm

        self.rounds = rounds
        if mode == "bar" and stream is None and not sys.stderr.isatty():  # the bar's stream is a file: lines
            mode = "lines"
        self.lines = (stream or sys.stdout) if mode == "lines" else None
        self.bar = tqdm(total=rounds, initial=done, desc=name, unit="round", disable=mode != "bar",
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
            if self.lines is not None:
                print(describe(rec, self.rounds), file=self.lines, flush=True)
                continue
            if self.bar.disable:
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
            if rec.round > 0 and rec.participants == 0:
                self.bar.write(f"round {rec.round}: no client trained ({rec.skipped or 'no update applied'})")
            if rec.round > 0:
                self.bar.update(1)
            else:
                self.bar.refresh()

    def close(self) -> None:
        """Finish the bar."""
        self.bar.close()
