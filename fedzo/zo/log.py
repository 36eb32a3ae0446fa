"""The update log: the model *is* the initial weights plus the replay of this log.

Each entry is ``(round, seed, alphas, grad, lr)``: the in-place moves ``alphas`` made
along the direction ``z(seed)`` (a trainer's ``+eps, -2eps, +eps - lr g``, or a
server's single aggregated coefficient). Replaying entries in order with the same
noise spec re-runs the same float operations element by element, so the result is
bitwise equal to the parameters that produced the log (same device and dtype).

On disk the log is JSON Lines: a header line, then one line per round holding all of
that round's entries (and, optionally, a ``meta`` object of server state the round
added, such as reputation votes), each line carrying a CRC32 of its own content. A truncated or
corrupted line is detected on load; everything before it is kept, so an interrupted
run resumes from the last good round.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedzo.atomic import append_whole
from fedzo.errors import ReplayMismatch, WriteError
from fedzo.killpoints import write_torn
from fedzo.zo.params import ParamSet

FORMAT_VERSION = 1


@dataclass(frozen=True)
class LogEntry:
    """One direction's moves: ``theta += a * z(seed)`` for each ``a`` in ``alphas``."""

    round: int
    seed: int
    alphas: tuple[float, ...]
    grad: float | None = None
    lr: float | None = None

    @property
    def coefficient(self) -> float:
        """Net coefficient along ``z(seed)`` (exact in real arithmetic)."""
        return float(sum(self.alphas))

    def to_json(self) -> list[Any]:
        """Compact list form used inside a round line."""
        return [self.seed, list(self.alphas), self.grad, self.lr]

    @classmethod
    def from_json(cls, round_: int, item: Sequence[Any]) -> LogEntry:
        """Inverse of :meth:`to_json`."""
        seed, alphas, grad, lr = item
        return cls(int(round_), int(seed), tuple(float(a) for a in alphas),
                   None if grad is None else float(grad), None if lr is None else float(lr))


def param_signature(params: ParamSet) -> str:
    """Digest of names, shapes and dtypes: what a log must match to be replayed."""
    h = hashlib.sha256()
    for name, t in zip(params.names, params.tensors, strict=True):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    return h.hexdigest()[:16]


def _line(payload: dict[str, Any]) -> str:
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return json.dumps({"crc": zlib.crc32(body.encode()), "data": payload},
                      sort_keys=True, separators=(",", ":"))


def _parse(line: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(line)
        payload = obj["data"]
        body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        if zlib.crc32(body.encode()) != obj["crc"]:
            return None
        return dict(payload)
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class LoadReport:
    """What :meth:`UpdateLog.load` found."""

    rounds: int = 0
    bad_line: int | None = None  # 1-based line number of the first bad line, if any
    dropped_lines: int = 0


@dataclass
class UpdateLog:
    """Append-only log of rounds of entries, optionally persisted to ``path``."""

    header: dict[str, Any]
    path: Path | None = None
    rounds: list[tuple[int, list[LogEntry]]] = field(default_factory=list)
    meta: dict[int, dict[str, Any]] = field(default_factory=dict)  # round -> server state it added

    @classmethod
    def create(cls, header: dict[str, Any], path: str | os.PathLike[str] | None = None) -> UpdateLog:
        """A new empty log; with ``path``, the header line is written (file must not exist)."""
        log = cls(dict(header, format=FORMAT_VERSION), Path(path) if path else None)
        if log.path is not None:
            with open(log.path, "x", encoding="utf-8") as f:
                f.write(_line({"header": log.header}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return log

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, repair: bool = False) -> tuple[UpdateLog, LoadReport]:
        """Read a log; stops at the first corrupted or truncated line.

        With ``repair`` the file is rewritten without the bad tail, so appends continue
        from the last good round.
        """
        p = Path(path)
        lines = p.read_text(encoding="utf-8").splitlines()
        log, report = cls.parse(lines, str(p))
        log.path = p
        if repair and report.bad_line is not None:
            good = lines[: report.bad_line - 1]
            tmp = p.with_suffix(p.suffix + ".tmp")
            tmp.write_text("\n".join(good) + "\n", encoding="utf-8")
            os.replace(tmp, p)
        return log, report

    @classmethod
    def parse(cls, lines: Sequence[str], origin: str) -> tuple[UpdateLog, LoadReport]:
        """A log (not persisted) from its lines, up to the first corrupted or truncated one;
        ``origin`` names where they came from in errors."""
        if not lines:
            raise ReplayMismatch(f"{origin}: empty update log (no header line)")
        head = _parse(lines[0])
        if head is None or "header" not in head:
            raise ReplayMismatch(f"{origin}:1: header line is corrupted")
        log = cls(head["header"])
        report = LoadReport()
        for no, line in enumerate(lines[1:], start=2):
            payload = _parse(line)
            if payload is None or "round" not in payload:
                report.bad_line = no
                report.dropped_lines = len(lines) - no + 1
                break
            r = int(payload["round"])
            log.rounds.append((r, [LogEntry.from_json(r, e) for e in payload["entries"]]))
            if payload.get("meta"):
                log.meta[r] = dict(payload["meta"])
        report.rounds = len(log.rounds)
        return log, report

    def _round_line(self, round_: int, items: Sequence[LogEntry]) -> str:
        payload: dict[str, Any] = {"round": round_, "entries": [e.to_json() for e in items]}
        if self.meta.get(round_):
            payload["meta"] = self.meta[round_]
        return _line(payload)

    def append_round(self, round_: int, entries: Iterable[LogEntry], meta: dict[str, Any] | None = None) -> None:
        """Append one round (atomically as one line, fsynced when persisted); ``meta``: JSON
        server state the round added, kept with it (omitted when empty)."""
        items = list(entries)
        if self.rounds and round_ <= self.rounds[-1][0]:
            raise ValueError(f"round {round_} is not after the last logged round {self.rounds[-1][0]}")
        self.rounds.append((round_, items))
        if meta:
            self.meta[round_] = dict(meta)
        if self.path is not None:
            line = self._round_line(round_, items) + "\n"
            try:
                append_whole(self.path, line, lambda f: write_torn("zo-log-torn", round_, f, line))
            except WriteError:
                self.rounds.pop()  # the round is in memory only when it is on disk
                self.meta.pop(round_, None)
                raise

    def truncate(self, last_round: int) -> None:
        """Forget rounds after ``last_round`` (in memory and on disk)."""
        self.rounds = [(r, e) for r, e in self.rounds if r <= last_round]
        self.meta = {r: m for r, m in self.meta.items() if r <= last_round}
        if self.path is not None:
            lines = [_line({"header": self.header})]
            lines += [self._round_line(r, e) for r, e in self.rounds]
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
            os.replace(tmp, self.path)

    @property
    def last_round(self) -> int | None:
        """Round number of the newest entry, or None when empty."""
        return self.rounds[-1][0] if self.rounds else None

    def entries(self, after: int | None = None, upto: int | None = None) -> list[LogEntry]:
        """Entries of rounds in ``(after, upto]``, in order."""
        out: list[LogEntry] = []
        for r, items in self.rounds:
            if (after is None or r > after) and (upto is None or r <= upto):
                out.extend(items)
        return out


def check_signature(log: UpdateLog, params: ParamSet) -> None:
    """Raise ReplayMismatch unless ``log`` was written for parameters shaped like ``params``."""
    want = log.header.get("param_signature")
    have = param_signature(params)
    if want is not None and want != have:
        raise ReplayMismatch(
            f"update log was written for parameter set {want} "
            f"({log.header.get('param_count', '?')} tensors, {log.header.get('param_numel', '?')} "
            f"values) but the model has {have} ({len(params)} tensors, {params.numel} values); "
            "replay needs the same model, trainable set and dtype"
        )
