"""Run directories: the resolved config, metrics, update log and summary of one run.

Layout (the schema of the records is :mod:`fedzo.records`)::

    RUN/
      scenario.yaml     the resolved configuration (what was actually run), with ``kind``
      environment.json  what the run computed on (fedzo.environment)
      metrics.jsonl     one record per line: kind "round", "client" or "fleet"
      update_log.jsonl  the replayable update log (fedzo.zo.log)
      summary.json      final figures (written at the end, rewritten on resume)
      state/            extra resumable state (backprop checkpoints)
      plots/            figures written at the end of the run

Metrics are appended one batch per completed round, after the update log has that
round, so a run killed at any point resumes from the last round present in both and
no line is lost or duplicated (lines of unfinished rounds are dropped on resume).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from fedzo import environment
from fedzo.archives import archived_note, locate
from fedzo.atomic import append_whole, write_whole
from fedzo.errors import ConfigError
from fedzo.killpoints import kill_point, write_torn
from fedzo.records import (
    ClientRecord,
    FleetRecord,
    Record,
    RecordError,
    RoundRecord,
    Summary,
    parse_record,
    parse_summary,
)

SCENARIO = "scenario.yaml"
METRICS = "metrics.jsonl"
UPDATE_LOG = "update_log.jsonl"
SUMMARY = "summary.json"
STATE = "state"

AnyRecord = RoundRecord | ClientRecord | FleetRecord
Listener = Callable[[Sequence[AnyRecord]], None]

log = logging.getLogger(__name__)


class RunDir:
    """A run directory being written (fresh or resumed)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._listeners: list[Listener] = []

    def on_append(self, listener: Listener) -> None:
        """Call ``listener`` with every batch of records once it is on disk (progress lines)."""
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
        write_whole(run.path / SCENARIO, yaml.safe_dump(dict(config), sort_keys=False))
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory (for resume); clear error when it is not one."""
        run = cls(path)
        if not run.path.is_dir():
            raise ConfigError(archived_note(run.path) or f"{run.path}: no such run directory")
        if not (run.path / SCENARIO).is_file():
            raise ConfigError(f"{run.path}: not a fedzo run directory (no {SCENARIO})")
        return run

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> RunDir:
        """An existing run directory to read (not to resume): on disk, or in its experiment's
        archive (:mod:`fedzo.archives`)."""
        return cls.open(locate(path))

    def config(self) -> dict[str, Any]:
        """The resolved configuration stored in the run (as written, any format version)."""
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

    def append(self, records: Sequence[Record]) -> None:
        """Append records (one JSON line each), flushed and fsynced together."""
        lines = "".join(r.to_json() + "\n" for r in records)
        round_ = getattr(records[-1], "round", None) if records else None
        append_whole(self.path / METRICS, lines, lambda f: write_torn("metrics-torn", round_, f, lines))
        typed = [r for r in records if isinstance(r, RoundRecord | ClientRecord | FleetRecord)]
        for listener in self._listeners:
            listener(typed)

    def _lines(self) -> list[str]:
        p = self.path / METRICS
        return p.read_text(encoding="utf-8").splitlines() if p.exists() else []

    def records(self) -> list[AnyRecord]:
        """Every complete record (reading stops at a torn last line, a write cut by a kill).

        A line that is valid JSON but breaks the schema is an error naming file and line.
        """
        out: list[AnyRecord] = []
        for no, line in enumerate(self._lines(), start=1):
            try:
                obj = json.loads(line)
            except ValueError:
                break
            try:
                rec = parse_record(obj)
            except RecordError as exc:
                raise ConfigError(f"{self.path / METRICS}:{no}: {exc}") from None
            if rec is not None:
                out.append(rec)
        return out

    def rounds(self) -> list[RoundRecord]:
        """The round records, in file order."""
        return [r for r in self.records() if isinstance(r, RoundRecord)]

    def torn_metrics_lines(self) -> int:
        """Lines of metrics.jsonl from the first unreadable one on (a write cut by a kill)."""
        lines = self._lines()
        good = 0
        for line in lines:
            try:
                json.loads(line)
            except ValueError:
                break
            good += 1
        return len(lines) - good

    def truncate_metrics(self, last_round: int) -> list[AnyRecord]:
        """Keep only records of rounds <= ``last_round`` (drops unfinished rounds).

        A torn tail (an interrupted write) is dropped too, and reported as a warning.
        """
        torn = self.torn_metrics_lines()
        if torn:
            log.warning("%s: dropped %d unreadable line(s) at the end of %s (a write cut short); "
                        "resuming from round %d", self.path, torn, METRICS, last_round)
        kept = [r for r in self.records() if r.round <= last_round]
        tmp = self.path / (METRICS + ".tmp")
        tmp.write_text("".join(r.to_json() + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path / METRICS)
        return kept

    def read_summary(self) -> Summary | None:
        """summary.json, or None when the run has not finished."""
        p = self.path / SUMMARY
        if not p.exists():
            return None
        try:
            return parse_summary(json.loads(p.read_text(encoding="utf-8")))
        except (ValueError, RecordError) as exc:
            raise ConfigError(f"{p}: {exc}") from None

    def write_summary(self, summary: Summary) -> None:
        """Write summary.json atomically."""
        kill_point("summary-temp-written")
        write_whole(self.path / SUMMARY, json.dumps(summary.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")

    def write_plots(self) -> None:
        """Write the run's figures into ``plots/``; a plotting failure is a note, never a lost run."""
        try:
            from fedzo.reporting.plots import plot_runs

            plot_runs([self.path], self.path / "plots")
        except Exception as exc:  # noqa: BLE001 - plotting must never lose a finished run
            print(f"note: plots not written ({exc})")


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two stored configurations differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def open_run(out: str | os.PathLike[str], config: BaseModel, kind: str, *, resume: bool, force: bool,
             stored: Callable[[dict[str, Any], str], BaseModel], ignore: Collection[str] = ()) -> RunDir:
    """A fresh run directory for ``config``, or (``resume``) the existing one after checking
    that it was started with the same configuration.

    The stored configuration is read through ``stored`` (which upgrades older formats), so
    a run started by an older fedzo resumes when nothing but the format changed. Keys in
    ``ignore`` may differ (for example the engine).
    """
    env = _environment_of(config)
    if not resume:
        fresh = RunDir.create(out, {"kind": kind, **config.model_dump(mode="json")}, force=force)
        environment.write(fresh.path, env)
        return fresh
    run = RunDir.open(out)
    data = run.config()
    found = data.pop("kind", None)
    if found != kind:
        raise ConfigError(f"{out}: a {found!r} run, not a {kind!r} run; resume it with the command that started it")
    before = stored(data, str(run.path / SCENARIO)).model_dump(mode="json")
    changed = [k for k in changed_keys(before, config.model_dump(mode="json")) if k not in ignore]
    if changed:
        raise ConfigError(f"{out}: cannot resume with a changed configuration (changed: {', '.join(changed)}); "
                          "start a new run directory, or rerun with --force to overwrite this one")
    environment.compare(run.path, env, "resuming")
    return run


def _environment_of(config: BaseModel) -> dict[str, Any]:
    """The present environment of a run of ``config`` (its runtime section and precision)."""
    runtime, model = getattr(config, "runtime", None), getattr(config, "model", None)
    return environment.capture(device=getattr(runtime, "device", "auto"), dtype=getattr(model, "dtype", "fp32"),
                               threads=getattr(runtime, "threads", None))


@contextlib.contextmanager
def discarded_on_failure(run: RunDir, *, fresh: bool) -> Iterator[None]:
    """A fresh run whose setup fails (bad data, a missing calibration, Ctrl-C) leaves no
    directory behind, so the corrected scenario starts without --force or --resume."""
    try:
        yield
    except BaseException:
        if fresh and not run.records() and not run.log_path.exists():
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def never_started(path: str | os.PathLike[str]) -> bool:
    """Say so when a run directory to resume holds no round (its setup never finished, e.g.
    killed): it starts from round 0 with its stored scenario, which may be the one whose setup
    failed, so the note says how to start a corrected one instead."""
    run = RunDir.open(path)
    if run.records() or run.log_path.exists():
        return False
    print(f"fedzo: note: {run.path} never started a round (its setup did not finish); starting it from round 0 with "
          f"its stored scenario. To run a corrected scenario instead: `fedzo run SCENARIO --out {run.path} --force`",
          file=sys.stderr)
    return True


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
