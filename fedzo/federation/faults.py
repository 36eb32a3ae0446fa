"""Fault injection at the transport boundary, and how replies are collected and counted.

A scenario's ``faults:`` section (:class:`FaultsConfig`) names, per fault kind, the
fraction of a round's participants that suffer it. Which clients are hit is a pure
function of ``(faults.seed, round, client)``: one uniform draw per client-round is
split into consecutive intervals, one per kind, so a client suffers at most one of
the delivery faults in a round (Byzantine behaviour is drawn independently).

Faults are injected by :class:`FaultyTransport`, a wrapper around the real transport
(in-process calls, Flower's Grid): the server code that validates, rejects and counts
replies runs unchanged. Kinds:

``crash_before``  the client crashes before training: an error reply (status ``failed``).
``crash_after``   the client trains, its reply is lost (status ``dropped``).
``straggler``     the client trains, its reply arrives after the round timeout, when the
                  server no longer listens (status ``dropped``).
``dropout``       the client leaves mid-round: no training finishes, no reply (``dropped``).
``duplicate``     the reply is delivered twice (the copy is counted, never aggregated).
``stale``         the client's reply carries the previous round's number (a late or
                  replayed reply) instead of the current one (status ``excluded``, reason
                  code ``stale-round``).
``byzantine``     the reply's scalars are tampered with (``sign_flip``, ``scale`` x 1e6,
                  ``nan``, ``inf``, ``random``); non-finite and out-of-bound scalars are
                  rejected by validation, the rest reach the (robust) aggregator.

Counting: each client record gets ``fault`` (the injected kind, or null) and
``extra_replies`` (codes of surplus replies of that client); each round record gets
``faults_injected`` and ``extra_replies`` counts (:func:`round_fault_counts`);
summary.json gets ``faults`` totals (:func:`fault_totals`) computed from the records,
so they survive a resume unchanged.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Error, Message, RecordDict
from fedzo.federation.messages import (
    CONFIG_KEY, Expected, MessageError, pack_f32, parse_uplink, unpack_f32,
)
from fedzo.federation.faultspec import (
    BYZANTINE_KINDS, DELIVERY_FAULTS, ByzantineConfig, FaultsConfig, delivery_fault, is_byzantine,
)
from fedzo.zo.seeds import derive_seed

__all__ = ["BYZANTINE_KINDS", "DELIVERY_FAULTS", "ByzantineConfig", "Collected", "FaultsConfig",
           "FaultyTransport", "collect_replies", "delivery_fault", "fault_totals", "is_byzantine",
           "round_fault_counts", "tamper", "with_faults"]

RANDOM_TAG = 0x4A4D
BYZANTINE_SCALE = 1e6
FAULT_ERROR_CODE = 17  # Flower Error code of an injected crash


def tamper(scalars: Sequence[float], kind: str, seed: int) -> tuple[float, ...]:
    """The scalars a Byzantine client of ``kind`` sends instead of ``scalars``."""
    s = np.asarray(scalars, dtype=np.float64)
    if kind == "sign_flip":
        out = -s
    elif kind == "scale":
        out = s * BYZANTINE_SCALE
    elif kind == "nan":
        out = np.full_like(s, math.nan)
    elif kind == "inf":
        out = np.where(np.arange(s.size) % 2 == 0, math.inf, -math.inf)
    elif kind == "random":
        scale = 10.0 * max(float(np.abs(s).max(initial=0.0)), 1e-3)
        out = np.random.default_rng(seed).normal(0.0, scale, s.size)
    else:
        raise ValueError(f"byzantine kind {kind!r} is not known; allowed: {', '.join(BYZANTINE_KINDS)}")
    return tuple(float(x) for x in out)


def _downlink_ids(msg: Message) -> tuple[str, int, int] | None:
    """(op, round, client) of a seeds-and-scalars downlink, None for other messages."""
    try:
        rec = msg.content.config_records[CONFIG_KEY]
        return str(rec["op"]), int(rec["r"]), int(rec["c"])  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        return None


def _with_config(content: RecordDict, **changes: Any) -> RecordDict:
    """A copy of ``content`` whose ConfigRecord ``fz`` has ``changes`` applied."""
    out = RecordDict()
    for key, rec in content.items():
        if key == CONFIG_KEY and isinstance(rec, ConfigRecord):
            rec = ConfigRecord({**dict(rec), **changes})
        out[key] = rec
    return out


def _reply(content: RecordDict | Error, to: Message) -> Message:
    return Message(content, reply_to=to)


@dataclass
class FaultyTransport:
    """A transport that injects the configured faults around ``inner``'s deliveries.

    ``injected`` maps client -> fault kinds of the latest exchange (read by the server
    when it writes the client records).
    """

    inner: Any
    cfg: FaultsConfig
    injected: dict[int, str] = field(default_factory=dict)

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        """Passed through."""
        return list(self.inner.node_ids(expected, timeout))

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        """Passed through."""
        return self.inner.new_message(content, node, round_)  # type: ignore[no-any-return]

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        """Deliver ``messages`` through the inner transport, injecting faults on the way.

        Stateless across exchanges (a resumed run injects exactly the same faults).
        """
        self.injected = {}
        plan: dict[int, tuple[int, int, str | None, bool]] = {}  # message index -> round, client, fault, byz
        deliver: list[Message] = []
        for i, msg in enumerate(messages):
            ids = _downlink_ids(msg)
            if ids is None or ids[0] != "train":
                deliver.append(msg)
                continue
            _, rnd, client = ids
            fault = delivery_fault(self.cfg, rnd, client)
            byz = is_byzantine(self.cfg, rnd, client)
            plan[i] = (rnd, client, fault, byz)
            kinds = [k for k in (fault, f"byzantine:{self.cfg.byzantine.kind}" if byz else None) if k]
            if kinds:
                self.injected[client] = "+".join(kinds)
            if fault not in ("crash_before", "dropout"):
                deliver.append(msg)
        answered: dict[int, Message] = {}
        for r in self.inner.exchange(deliver, timeout):  # one message per node and exchange
            answered.setdefault(int(r.metadata.src_node_id), r)
        out: list[Message] = []
        for i, msg in enumerate(messages):
            if i not in plan:
                rep = answered.get(int(msg.metadata.dst_node_id))
                if rep is not None:
                    out.append(rep)
                continue
            rnd, client, fault, byz = plan[i]
            if fault == "crash_before":
                out.append(_reply(Error(code=FAULT_ERROR_CODE, reason="injected fault: client crashed "
                                        "before training"), msg))
                continue
            if fault == "dropout":
                continue
            rep = answered.get(int(msg.metadata.dst_node_id))
            if rep is None:
                continue
            if byz and rep.has_content():
                rep = self._tampered(rep, msg, rnd, client)
            if fault == "stale" and rep.has_content():
                rep = _reply(_with_config(rep.content, r=rnd - 1), msg)
            if fault in ("crash_after", "straggler"):
                continue
            out.append(rep)
            if fault == "duplicate":
                out.append(_reply(rep.content, msg) if rep.has_content() else rep)
        return out

    def _tampered(self, rep: Message, msg: Message, rnd: int, client: int) -> Message:
        rec = rep.content.config_records.get(CONFIG_KEY)
        if rec is None or not isinstance(rec.get("s"), bytes):
            return rep
        scalars = unpack_f32(bytes(rec["s"]))  # type: ignore[arg-type]
        bad = tamper(scalars, self.cfg.byzantine.kind, derive_seed(self.cfg.seed, RANDOM_TAG, rnd, client))
        with np.errstate(over="ignore"):
            packed = pack_f32(bad)
        return _reply(_with_config(rep.content, s=packed), msg)


def with_faults(transport: Any, faults: FaultsConfig | None) -> Any:
    """``transport`` wrapped by :class:`FaultyTransport` when ``faults`` injects anything."""
    if faults is None or not faults.active or isinstance(transport, FaultyTransport):
        return transport
    return FaultyTransport(transport, faults)


# -- collecting replies ------------------------------------------------------------------
@dataclass
class Collected:
    """A round's replies, one per client, and the surplus ones."""

    contents: dict[int, RecordDict | Exception]
    messages: dict[int, Message]
    extras: dict[int, list[str]]  # client -> codes of surplus replies
    unknown: int = 0  # replies from nodes that are not in this round


def collect_replies(replies: Iterable[Message], client_of_node: Mapping[int, int],
                    expected: Mapping[int, Expected], error: type[Exception]) -> Collected:
    """Pick one reply per client: the first that validates, else the first that arrived.

    Other replies of the same client are counted in ``extras`` by their rejection code
    (``duplicate`` when they would have validated too); replies from nodes outside
    the round are counted in ``unknown``. Error replies become ``error(reason)``.
    """
    by_client: dict[int, list[Message]] = {}
    unknown = 0
    for rep in replies:
        c = client_of_node.get(int(rep.metadata.src_node_id))
        if c is None:
            unknown += 1
            continue
        by_client.setdefault(c, []).append(rep)
    contents: dict[int, RecordDict | Exception] = {}
    messages: dict[int, Message] = {}
    extras: dict[int, list[str]] = {}
    for c, reps in by_client.items():
        codes: list[str | None] = []
        for rep in reps:
            if not rep.has_content():
                codes.append("failed")
                continue
            try:
                parse_uplink(rep.content, expected[c])
                codes.append(None)
            except MessageError as exc:
                codes.append(exc.code)
        pick = codes.index(None) if None in codes else 0
        rep = reps[pick]
        messages[c] = rep
        contents[c] = rep.content if rep.has_content() else error(rep.error.reason or "error")
        surplus = [code or "duplicate" for i, code in enumerate(codes) if i != pick]
        if surplus:
            extras[c] = surplus
    return Collected(contents, messages, extras, unknown)


# -- counting ----------------------------------------------------------------------------
def round_fault_counts(client_records: Iterable[Mapping[str, Any]], unknown_replies: int = 0) -> dict[str, Any]:
    """Round-record fields: injected faults and surplus replies, counted by kind."""
    injected: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    for r in client_records:
        if r.get("kind") != "client":
            continue
        for kind in (r.get("fault") or "").split("+"):
            if kind:
                injected[kind] += 1
        extra.update(r.get("extra_replies") or [])
    if unknown_replies:
        extra["unknown-node"] += unknown_replies
    return {"faults_injected": dict(sorted(injected.items())), "extra_replies": dict(sorted(extra.items()))}


def fault_totals(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """summary.json ``faults``: totals over the run's metric records.

    ``injected``: faults by kind; ``status``: client-rounds by status (ok, failed,
    dropped, excluded); ``rejected``: rejection codes; ``extra_replies``: surplus replies.
    """
    injected: Counter[str] = Counter()
    status: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    for r in records:
        if r.get("kind") == "client":
            status[str(r.get("status"))] += 1
        elif r.get("kind") == "round":
            injected.update(r.get("faults_injected") or {})
            extra.update(r.get("extra_replies") or {})
            rejected.update(Counter((r.get("rejected") or {}).values()))
    return {"injected": dict(sorted(injected.items())), "status": dict(sorted(status.items())),
            "rejected": dict(sorted(rejected.items())), "extra_replies": dict(sorted(extra.items()))}
