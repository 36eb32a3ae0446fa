"""Read and validate a fedzo run directory for plots and reports.

The layout (records in :mod:`fedzo.records`, written by ``fedzo run`` / ``fedzo train``)::

    RUN/scenario.yaml         resolved scenario (optional; only ``name`` is read)
    RUN/metrics.jsonl         one record per line (``kind`` round, client or fleet)
    RUN/summary.json          totals of the run (optional if metrics.jsonl exists)
    RUN/memory_frontier.json  optional: memory needed by a model family, BP vs ZO

Values of the wrong type, malformed JSON and a directory that is not a run are
:class:`~fedzo.errors.ConfigError` naming the file (and line). Lines of an unknown
``kind`` and unknown keys are ignored, so newer runs stay readable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import yaml

from fedzo import environment
from fedzo.archives import locate
from fedzo.errors import ConfigError
from fedzo.records import ClientRecord, RecordError, RoundRecord, parse_record

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
FRONTIER_FILE = "memory_frontier.json"
SCENARIO_FILE = "scenario.yaml"


@dataclass(frozen=True)
class FrontierModel:
    """One model of a memory frontier: bytes needed to train it with ZO and with BP."""

    name: str
    params: float | None
    zo_bytes: float
    bp_bytes: float


@dataclass(frozen=True)
class MemoryFrontier:
    """``memory_frontier.json``: which models of a family fit which memory budgets."""

    family: str
    budgets_bytes: tuple[float, ...]
    models: tuple[FrontierModel, ...]
    dtype: str = "fp32"  # precision the bytes are priced at (files written before 2026-12 lack it)

    def largest_fitting(self, budget: float, method: str) -> FrontierModel | None:
        """The largest model (by parameters, then bytes) trainable within ``budget``.

        ``method`` is ``"zo"`` or ``"bp"``. Returns None when no model fits.
        """
        key = "zo_bytes" if method == "zo" else "bp_bytes"
        fitting = [m for m in self.models if getattr(m, key) <= budget]
        if not fitting:
            return None
        return max(fitting, key=lambda m: (m.params or 0.0, getattr(m, key)))


@dataclass
class Run:
    """A loaded run directory.

    ``summary`` is ``summary.json`` with gaps filled from the metrics (final and best
    accuracy, cumulative times and bytes, peak client memory), so every key of the
    summary contract is present (``None`` where unknown).
    """

    path: Path
    name: str
    summary: dict[str, Any]
    rounds: list[RoundRecord] = field(default_factory=list)
    clients: list[ClientRecord] = field(default_factory=list)
    frontier: MemoryFrontier | None = None
    environment: dict[str, Any] | None = None  # environment.json: what the run computed on

    @property
    def eval_rounds(self) -> list[RoundRecord]:
        """Rounds that carry an evaluation accuracy, in round order."""
        return [r for r in self.rounds if r.eval_accuracy is not None]

    @property
    def is_federated(self) -> bool:
        """True when the run has client lines or communicated any bytes."""
        if self.clients:
            return True
        return any((r.bytes_total or 0.0) > 0 for r in self.rounds)


# --------------------------------------------------------------------------- parsing


def _number(value: Any, where: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: field {key!r} is {value!r}; expected a number or null")
    return value


def _text(value: Any, where: str, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: field {key!r} is {value!r}; expected a string or null")
    return value


def read_metrics(path: Path) -> tuple[list[RoundRecord], list[ClientRecord]]:
    """Parse ``metrics.jsonl`` into round and client records (:mod:`fedzo.records`).

    Blank lines are skipped. When a round (or a client in a round) appears more than
    once, as after a resumed run, the last line wins. Records come back sorted by round.
    """
    rounds: dict[int, RoundRecord] = {}
    clients: dict[tuple[int, int], ClientRecord] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc}); expected a UTF-8 JSONL file") from exc
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: malformed JSON ({exc.msg} at column {exc.colno}); "
                              "expected one JSON object per line") from exc
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: line is {type(obj).__name__}; expected a JSON object")
        try:
            rec = parse_record(obj)
        except RecordError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if isinstance(rec, RoundRecord):
            rounds[rec.round] = rec
        elif isinstance(rec, ClientRecord):
            clients[(rec.round, rec.client)] = rec
    return [rounds[k] for k in sorted(rounds)], [clients[k] for k in sorted(clients)]


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}:{exc.lineno}: malformed JSON ({exc.msg}); expected a JSON object"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc}); expected a UTF-8 JSON file") from exc
    if not isinstance(obj, dict):
        raise ConfigError(f"{path}: top level is {type(obj).__name__}; expected a JSON object")
    return obj


def read_frontier(path: Path) -> MemoryFrontier:
    """Parse and validate ``memory_frontier.json``.

    ``budgets_bytes`` may be missing, in which case the budgets are the distinct memory
    requirements of the models themselves.
    """
    obj = _read_json_object(path)
    models_raw = obj.get("models")
    if not isinstance(models_raw, list) or not models_raw:
        raise ConfigError(f"{path}: 'models' is {models_raw!r}; expected a non-empty list")
    models: list[FrontierModel] = []
    for i, m in enumerate(models_raw):
        where = f"{path}: models[{i}]"
        if not isinstance(m, dict):
            raise ConfigError(f"{where} is {m!r}; expected an object")
        name = _text(m.get("name"), where, "name") or f"model-{i}"
        zo = _number(m.get("zo_bytes"), where, "zo_bytes")
        bp = _number(m.get("bp_bytes"), where, "bp_bytes")
        if zo is None or bp is None:
            raise ConfigError(f"{where}: needs both 'zo_bytes' and 'bp_bytes' (numbers)")
        models.append(FrontierModel(name, _number(m.get("params"), where, "params"), zo, bp))
    budgets_raw = obj.get("budgets_bytes")
    if budgets_raw is None:
        budgets = sorted({v for m in models for v in (m.zo_bytes, m.bp_bytes)})
    elif isinstance(budgets_raw, list) and budgets_raw:
        budgets = sorted(
            float(_number(b, f"{path}: budgets_bytes[{i}]", "budget") or 0.0)
            for i, b in enumerate(budgets_raw)
        )
    else:
        raise ConfigError(
            f"{path}: 'budgets_bytes' is {budgets_raw!r}; expected a non-empty list of numbers"
        )
    family = _text(obj.get("family"), str(path), "family") or "models"
    dtype = _text(obj.get("dtype"), str(path), "dtype") or "fp32"
    return MemoryFrontier(family, tuple(budgets), tuple(models), dtype)


def _scenario_name(path: Path) -> str | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the scenario ({exc}); expected YAML") from exc
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return data["name"]
    return None


def _derived_summary(rounds: list[RoundRecord], clients: list[ClientRecord]) -> dict[str, Any]:
    """Summary values computed from the metrics, used where summary.json is silent."""
    accs = [r.eval_accuracy for r in rounds if r.eval_accuracy is not None]
    peaks = [c.peak_memory_bytes for c in clients if c.peak_memory_bytes is not None]

    def last(attr: str) -> Any:
        values = [getattr(r, attr) for r in rounds if getattr(r, attr) is not None]
        return values[-1] if values else None

    return {
        "final_accuracy": accs[-1] if accs else None,
        "best_accuracy": max(accs) if accs else None,
        "sim_seconds": last("sim_seconds"),
        "host_seconds": last("host_seconds"),
        "bytes_up": last("bytes_up_total"),
        "bytes_down": last("bytes_down_total"),
        "peak_client_memory_bytes": max(peaks) if peaks else None,
        "model_sha256": None,
        "model": None,
        "optimizer": None,
        "method": None,
    }


def load_run(path: str | Path) -> Run:
    """Load and validate the run directory at ``path`` (on disk, or in its experiment's
    archive: :mod:`fedzo.archives`; ``Run.path`` stays the path given).

    Raises:
        ConfigError: the path is missing or not a directory, holds neither
            ``summary.json`` nor ``metrics.jsonl``, or one of its files is malformed
            (the message names the file and, for JSONL, the line).
    """
    given, root = Path(path), locate(path)
    if not root.exists():
        raise ConfigError(f"{root}: no such run directory; expected a fedzo run directory")
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory; expected a fedzo run directory")
    summary_path, metrics_path = root / SUMMARY_FILE, root / METRICS_FILE
    if not summary_path.is_file() and not metrics_path.is_file():
        raise ConfigError(
            f"{root}: not a fedzo run directory (no {SUMMARY_FILE} or {METRICS_FILE})"
        )
    rounds, clients = read_metrics(metrics_path) if metrics_path.is_file() else ([], [])
    raw = _read_json_object(summary_path) if summary_path.is_file() else {}
    summary = _derived_summary(rounds, clients)
    summary.update({k: v for k, v in raw.items() if v is not None})
    frontier_path = root / FRONTIER_FILE
    frontier = read_frontier(frontier_path) if frontier_path.is_file() else None

    name = raw.get("name") if isinstance(raw.get("name"), str) and raw.get("name") else None
    scenario_path = root / SCENARIO_FILE
    if name is None and scenario_path.is_file():
        name = _scenario_name(scenario_path)
    if name is None:
        name = root.resolve().name
    summary["name"] = name
    return Run(given, name, summary, rounds, clients, frontier, environment.read(root))


def display_names(runs: list[Run]) -> list[str]:
    """Legend labels for ``runs``: the run names, made unique.

    Runs sharing a name get their directory name appended (``"quickstart [run-2]"``);
    if that still collides, a running index.
    """
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    labels = []
    for run in runs:
        label = run.name
        if counts[run.name] > 1:
            label = f"{run.name} [{run.path.resolve().name}]"
        labels.append(label)
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} #{seen[label]}")
    return unique


def is_finite(value: float | None) -> TypeGuard[float]:
    """True for a real, finite number (narrows ``value`` to ``float`` for type checkers)."""
    return value is not None and math.isfinite(value)
