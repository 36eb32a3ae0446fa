"""Run directories: the resolved config, metrics, update log and summary of one run.

Layout (read by :mod:`analysis`, never by training code of another run)::

    RUN/
      scenario.yaml     the resolved configuration (what was actually run)
      metrics.jsonl     one JSON object per line: kind "round" (one per round or
                        evaluation point) and kind "client" (one per client-round)
      update_log.jsonl  the replayable update log (fedzo.zo.log)
      summary.json      final figures (written at the end, rewritten on resume)
      plots/            figures written at the end of the run

Metrics are appended one line per completed round, after the update log has that
round, so a run killed at any point resumes from the last round present in both and
no line is lost or duplicated (lines of unfinished rounds are dropped on resume).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fedzo.errors import ConfigError

# Metric fields measured on the host (time, memory): they differ between two runs of the
# same configuration, unlike every other field, which a rerun or a resume reproduces.
HOST_MEASURED_KEYS = frozenset({"host_seconds", "host_compute_seconds", "peak_memory_bytes",
                                "server_replay_seconds"})

SCENARIO = "scenario.yaml"
METRICS = "metrics.jsonl"
UPDATE_LOG = "update_log.jsonl"
SUMMARY = "summary.json"
STATE = "state"

log = logging.getLogger(__name__)


class RunDir:
    """A run directory being written (fresh or resumed)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._listeners: list[Callable[[list[dict[str, Any]]], None]] = []

    def on_append(self, listener: Callable[[list[dict[str, Any]]], None]) -> None:
        """Call ``listener`` with every batch of metric records once it is on disk (progress bars)."""
        self._listeners.append(listener)

    # -- creation -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike[str], config: Mapping[str, Any], *, force: bool = False) -> RunDir:
        """Start a fresh run directory; refuses to overwrite an existing run unless ``force``."""
        run = cls(path)
        if run.path.exists() and any(run.path.iterdir()):
            if not force:
                raise ConfigError(
                    f"{run.path}: directory exists and is not empty; use --resume {run.path} to "
                    "continue that run, --force to overwrite it, or --out to choose another directory"
                )
            shutil.rmtree(run.path)
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / SCENARIO).write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory (for resume); clear error when it is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise ConfigError(f"{run.path}: no such run directory")
        if not (run.path / SCENARIO).is_file():
            raise ConfigError(f"{run.path}: not a fedzo run directory (no {SCENARIO})")
        return run

    def config(self) -> dict[str, Any]:
        """The resolved configuration stored in the run."""
        data = yaml.safe_load((self.path / SCENARIO).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ConfigError(f"{self.path / SCENARIO}: not a mapping")
        return data

    # -- files ---------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """Where the update log lives."""
        return self.path / UPDATE_LOG

    @property
    def state_dir(self) -> Path:
        """Extra resumable state (first-order checkpoints)."""
        d = self.path / STATE
        d.mkdir(exist_ok=True)
        return d

    def append_metrics(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append metric records (one JSON line each), flushed and fsynced together."""
        batch = [dict(r) for r in records]
        lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in batch)
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        for listener in self._listeners:
            listener(batch)

    def read_metrics(self) -> list[dict[str, Any]]:
        """All complete metric records (a torn last line is ignored)."""
        p = self.path / METRICS
        if not p.exists():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                break
        return out

    def torn_metrics_lines(self) -> int:
        """Lines of metrics.jsonl from the first unreadable one on (a write cut by a kill)."""
        p = self.path / METRICS
        if not p.exists():
            return 0
        lines = p.read_text(encoding="utf-8").splitlines()
        return len(lines) - len(self.read_metrics())

    def truncate_metrics(self, last_round: int) -> list[dict[str, Any]]:
        """Keep only records of rounds <= ``last_round`` (drops unfinished rounds).

        A torn tail (an interrupted write) is dropped too, and reported as a warning.
        """
        torn = self.torn_metrics_lines()
        if torn:
            log.warning("%s: dropped %d unreadable line(s) at the end of %s (a write cut short); "
                        "resuming from round %d", self.path, torn, METRICS, last_round)
        kept = [r for r in self.read_metrics() if int(r.get("round", -1)) <= last_round]
        tmp = self.path / (METRICS + ".tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path / METRICS)
        return kept

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json, or None when the run has not finished."""
        p = self.path / SUMMARY
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else None

    def write_plots(self) -> None:
        """Write the run's figures into ``plots/``; a plotting failure is a note, never a lost run."""
        try:
            from analysis.plots import plot_runs

            plot_runs([self.path], self.path / "plots")
        except Exception as exc:  # plotting must never lose a finished run
            print(f"note: plots not written ({exc})")

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        """Write summary.json atomically."""
        tmp = self.path / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(dict(summary), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path / SUMMARY)


def report_torn_log(path: str | os.PathLike[str], bad_line: int | None, dropped: int) -> None:
    """Warn that an update log had a bad tail (``UpdateLog.load`` report) that was dropped."""
    if bad_line is not None:
        log.warning("%s: line %d is truncated or corrupted; dropped %d line(s) and resuming from the "
                    "last good round", path, bad_line, dropped)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def accuracy_summary(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """``initial_accuracy``, ``final_accuracy`` and ``best_accuracy`` of a run's round records."""
    accs = [r["eval_accuracy"] for r in records
            if r.get("kind") == "round" and r.get("eval_accuracy") is not None]
    return {"initial_accuracy": accs[0] if accs else None, "final_accuracy": accs[-1] if accs else None,
            "best_accuracy": max(accs) if accs else None}
