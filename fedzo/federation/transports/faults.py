"""Fault injection at the transport boundary, and how replies are collected and counted.

A scenario's ``faults:`` section (:class:`FaultsConfig`) names, per fault kind, the
fraction of a round's participants that suffer it. Which clients are hit is a pure
function of ``(faults.seed, round, client)``: one uniform draw per client-round is
split into consecutive intervals, one per kind, so a client suffers at most one of
the delivery faults in a round (Byzantine behaviour is drawn independently, per
client-round, or once per client with ``byzantine.persistent``: then the same
``round(fraction x num_clients)`` clients lie in every round they take part in).

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
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Error, Message, RecordDict

from fedzo.config.faults import BYZANTINE_KINDS, DELIVERY_FAULTS, ByzantineConfig, FaultsConfig
from fedzo.federation.transports.base import Transport
from fedzo.federation.wire.messages import CONFIG_KEY, pack_f32, unpack_f32
from fedzo.records import ClientRecord, FleetRecord, RoundRecord
from fedzo.zo.seeds import derive_seed

__all__ = ["BYZANTINE_KINDS", "DELIVERY_FAULTS", "ByzantineConfig", "FaultsConfig",
           "FaultyTransport", "delivery_fault", "fault_totals", "is_byzantine", "persistent_attackers",
           "round_fault_counts", "tamper", "with_faults"]

RANDOM_TAG = 0x4A4D
FAULT_TAG = 0xFA17
BYZANTINE_TAG = 0xB42A
BYZANTINE_SCALE = 1e6
FAULT_ERROR_CODE = 17  # Flower Error code of an injected crash


def delivery_fault(cfg: FaultsConfig, round_: int, client: int) -> str | None:
    """The delivery fault of ``client`` in ``round_`` (or None): a pure function of the seeds."""
    u = random.Random(derive_seed(cfg.seed, FAULT_TAG, round_, client)).random()
    edge = 0.0
    for kind in DELIVERY_FAULTS:
        frac = float(getattr(cfg, kind))
        if frac > 0 and edge <= u < edge + frac:
            return kind
        edge += frac
    return None


def persistent_attackers(cfg: FaultsConfig, num_clients: int) -> frozenset[int]:
    """The ``round(fraction x num_clients)`` clients that lie in every round (``persistent``):
    those with the smallest of one seeded draw per client."""
    draws = sorted((random.Random(derive_seed(cfg.seed, BYZANTINE_TAG, -1, c)).random(), c)
                   for c in range(num_clients))
    return frozenset(c for _, c in draws[: round(cfg.byzantine.fraction * num_clients)])


def is_byzantine(cfg: FaultsConfig, round_: int, client: int, num_clients: int) -> bool:
    """Whether ``client`` (of a fleet of ``num_clients``) tampers with its scalars in ``round_``."""
    frac = cfg.byzantine.fraction
    if frac <= 0:
        return False
    if cfg.byzantine.persistent:
        return client in persistent_attackers(cfg, num_clients)
    return random.Random(derive_seed(cfg.seed, BYZANTINE_TAG, round_, client)).random() < frac


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
    if not msg.has_content() or CONFIG_KEY not in msg.content.config_records:
        return None
    rec = msg.content.config_records[CONFIG_KEY]
    op, rnd, client = rec.get("op"), rec.get("r"), rec.get("c")
    if isinstance(op, str) and isinstance(rnd, int) and isinstance(client, int):
        return op, rnd, client
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

    inner: Transport
    cfg: FaultsConfig
    num_clients: int
    injected: dict[int, str] = field(default_factory=dict)

    @property
    def clients_in_server(self) -> bool:
        """The inner transport's."""
        return self.inner.clients_in_server

    @property
    def nodes_restart(self) -> bool:
        """The inner transport's."""
        return self.inner.nodes_restart

    @property
    def last_joint_seconds(self) -> float | None:
        """The inner transport's host seconds in joint forward passes (batched engine)."""
        return getattr(self.inner, "last_joint_seconds", None)

    @property
    def last_batching(self) -> str | None:
        """The inner transport's note on how it batched the latest exchange (batched engine)."""
        return getattr(self.inner, "last_batching", None)

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        """Passed through."""
        return list(self.inner.node_ids(expected, timeout))

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        """Passed through."""
        return self.inner.new_message(content, node, round_)

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
            byz = is_byzantine(self.cfg, rnd, client, self.num_clients)
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
        packed_in = None if rec is None else rec.get("s")
        if not isinstance(packed_in, bytes):
            return rep
        scalars = unpack_f32(packed_in)
        bad = tamper(scalars, self.cfg.byzantine.kind, derive_seed(self.cfg.seed, RANDOM_TAG, rnd, client))
        with np.errstate(over="ignore"):
            packed = pack_f32(bad)
        return _reply(_with_config(rep.content, s=packed), msg)


def with_faults(transport: Transport, faults: FaultsConfig | None, num_clients: int) -> Transport:
    """``transport`` wrapped by :class:`FaultyTransport` when ``faults`` injects anything."""
    if faults is None or not faults.active or isinstance(transport, FaultyTransport):
        return transport
    return FaultyTransport(transport, faults, num_clients)


# -- counting ----------------------------------------------------------------------------
def round_fault_counts(client_records: Iterable[ClientRecord], unknown_replies: int = 0) -> dict[str, Any]:
    """Round-record fields: injected faults and surplus replies, counted by kind."""
    injected: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    for r in client_records:
        for kind in (r.fault or "").split("+"):
            if kind:
                injected[kind] += 1
        extra.update(r.extra_replies)
    if unknown_replies:
        extra["unknown-node"] += unknown_replies
    return {"faults_injected": dict(sorted(injected.items())), "extra_replies": dict(sorted(extra.items()))}


def fault_totals(records: Iterable[RoundRecord | ClientRecord | FleetRecord]) -> dict[str, dict[str, int]]:
    """summary.json ``faults``: totals over the run's metric records.

    ``injected``: faults by kind; ``status``: client-rounds by status (ok, failed,
    dropped, excluded); ``rejected``: rejection codes; ``extra_replies``: surplus replies.
    """
    injected: Counter[str] = Counter()
    status: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    extra: Counter[str] = Counter()
    for r in records:
        if isinstance(r, ClientRecord):
            status[r.status] += 1
        elif isinstance(r, RoundRecord):
            injected.update(r.faults_injected)
            extra.update(r.extra_replies)
            rejected.update(Counter(r.rejected.values()))
    return {"injected": dict(sorted(injected.items())), "status": dict(sorted(status.items())),
            "rejected": dict(sorted(rejected.items())), "extra_replies": dict(sorted(extra.items()))}
