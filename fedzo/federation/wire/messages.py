"""The wire schema of the seeds-and-scalars protocol, on Flower's typed records.

Every message body is a ``RecordDict``; this module is the only place that knows its keys.

Downlink (server -> client), message type ``train``::

    "fz"   ConfigRecord  v (schema version), op ("setup" | "train"), r (round), c (client),
                         s (K step seeds, uint64 LE bytes), lr, eps, q,
                         cu (catch-up kind: none | replay | seed_pool | full),
                         cf (round the client is synced to), ct (round it must reach),
                         cs (catch-up seeds, uint64 LE), cc (coefficients, float64 LE),
                         cn (pairs per replayed round, uint32 LE; only with a stateful
                         server optimizer, which moves the model round by round),
                         cfg (setup only: run configuration as JSON), d (config digest)
    "fzw"  ArrayRecord   the global trainable tensors (catch-up kind ``full`` only), with
                         the server optimizer's buffers when it keeps any

Uplink (client -> server)::

    "fz"   ConfigRecord  v, r, c, s (K*q projected gradients, float32 LE bytes),
                         sd (digest of the step seeds the client used)
    "fzm"  MetricRecord  n (examples), lm (mean loss), ll (last loss),
                         t (compute seconds), pm (peak memory bytes)

Scalars travel as packed float32 bytes (4 B each) and seeds as packed uint64 (8 B
each): a K = 10, q = 1 reply is about 160 B serialized. Coefficients of catch-up
entries travel as float64 because the client must apply the very same number the
server applied (bitwise replay).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar, cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedzo.errors import FedzoError
from fedzo.federation.catchup.base import CATCH_UP_KINDS, CatchUp, CatchUpKind
from fedzo.zo.seeds import derive_seed

SCHEMA_VERSION = 1
CONFIG_KEY = "fz"
METRIC_KEY = "fzm"
WEIGHTS_KEY = "fzw"
MESSAGE_TYPE = "train"



# -- errors ------------------------------------------------------------------------------
class MessageError(FedzoError):
    """A message does not follow the schema; ``code`` names the reason for counting."""

    code = "malformed"


class SchemaVersionError(MessageError):
    """The message was written with another schema version."""

    code = "version"


class ScalarCountError(MessageError):
    """A reply carries the wrong number of scalars."""

    code = "scalar-count"


class NonFiniteScalarError(MessageError):
    """A reply carries NaN or infinite scalars (or loss)."""

    code = "non-finite"


class ScalarBoundError(MessageError):
    """A reply carries a scalar beyond the configured bound."""

    code = "out-of-bounds"


class ExampleCountError(MessageError):
    """A reply claims another number of training examples than the server gave its client."""

    code = "example-count"


class ScaleError(MessageError):
    """A reply's scalars are far beyond the run's own scale (its recent aggregated scalars)."""

    code = "beyond-scale"


class UnknownSeedsError(MessageError):
    """A reply was computed for seeds the server did not send."""

    code = "unknown-seeds"


class StaleRoundError(MessageError):
    """A reply belongs to another round (late or replayed)."""

    code = "stale-round"


# -- packing -----------------------------------------------------------------------------
def pack_seeds(seeds: Sequence[int]) -> bytes:
    """Seeds in [0, 2^63) as little-endian uint64 bytes."""
    for s in seeds:
        if not 0 <= int(s) < 1 << 63:
            raise MessageError(f"seed {s!r} is out of range; allowed: 0 <= seed < 2^63")
    return struct.pack(f"<{len(seeds)}Q", *(int(s) for s in seeds))


def unpack_seeds(data: bytes, what: str = "seeds") -> tuple[int, ...]:
    """Inverse of :func:`pack_seeds`."""
    if len(data) % 8:
        raise MessageError(f"{what}: {len(data)} bytes is not a multiple of 8 (uint64 seeds)")
    return struct.unpack(f"<{len(data) // 8}Q", data)


def pack_f32(values: Sequence[float]) -> bytes:
    """Floats as little-endian float32 bytes (the uplink scalars)."""
    return np.asarray(values, dtype="<f4").tobytes()


def unpack_f32(data: bytes, what: str = "scalars") -> tuple[float, ...]:
    """Inverse of :func:`pack_f32` (values widened to Python floats exactly)."""
    if len(data) % 4:
        raise MessageError(f"{what}: {len(data)} bytes is not a multiple of 4 (float32)")
    return tuple(float(x) for x in np.frombuffer(data, dtype="<f4"))


def pack_f64(values: Sequence[float]) -> bytes:
    """Floats as little-endian float64 bytes (catch-up coefficients: exact)."""
    return struct.pack(f"<{len(values)}d", *values)


def unpack_f64(data: bytes, what: str = "coefficients") -> tuple[float, ...]:
    """Inverse of :func:`pack_f64`."""
    if len(data) % 8:
        raise MessageError(f"{what}: {len(data)} bytes is not a multiple of 8 (float64)")
    return struct.unpack(f"<{len(data) // 8}d", data)


def seeds_digest(seeds: Sequence[int]) -> int:
    """A 63-bit digest of a seed list (the uplink proves which seeds it answered)."""
    return derive_seed(len(seeds), *seeds)


# -- downlink ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Downlink:
    """A parsed server -> client message."""

    op: Literal["setup", "train"]
    round: int
    client: int
    seeds: tuple[int, ...] = ()
    lr: float = 0.0
    eps: float = 0.0
    q: int = 1
    catch_up: CatchUp = field(default_factory=CatchUp)
    config_json: str = ""
    config_digest: str = ""


def build_downlink(d: Downlink) -> RecordDict:
    """Serialize a :class:`Downlink` into records."""
    cu = d.catch_up
    if cu.kind not in CATCH_UP_KINDS:
        raise MessageError(f"catch-up kind {cu.kind!r} is not known; allowed: {', '.join(CATCH_UP_KINDS)}")
    if len(cu.seeds) != len(cu.coefs):
        raise MessageError(f"catch-up has {len(cu.seeds)} seeds but {len(cu.coefs)} coefficients")
    rec = ConfigRecord({
        "v": SCHEMA_VERSION, "op": d.op, "r": d.round, "c": d.client, "d": d.config_digest,
    })
    if d.op == "setup":
        rec["cfg"] = d.config_json
    else:
        rec.update({
            "s": pack_seeds(d.seeds), "lr": float(d.lr), "eps": float(d.eps), "q": int(d.q),
            "cu": cu.kind, "cf": cu.from_round, "ct": cu.to_round,
        })
        if cu.seeds:
            rec["cs"] = pack_seeds(cu.seeds)
            rec["cc"] = pack_f64(cu.coefs)
        if cu.round_sizes:
            rec["cn"] = np.asarray(cu.round_sizes, dtype="<u4").tobytes()
    out = RecordDict({CONFIG_KEY: rec})
    if cu.kind == "full":
        if cu.weights is None:
            raise MessageError("catch-up kind 'full' needs weights")
        out[WEIGHTS_KEY] = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in cu.weights.items()})
    return out


def _config(content: RecordDict) -> ConfigRecord:
    try:
        rec = content.config_records[CONFIG_KEY]
    except KeyError:
        raise MessageError(f"no ConfigRecord {CONFIG_KEY!r} in the message (keys: {list(content)})") from None
    v = rec.get("v")
    if v != SCHEMA_VERSION:
        raise SchemaVersionError(f"schema version {v!r}; this fedzo speaks version {SCHEMA_VERSION}")
    return rec


T = TypeVar("T", int, float, str, bytes)


def _get(rec: ConfigRecord | MetricRecord, key: str, kind: type[T]) -> T:
    """``rec[key]`` checked to be of ``kind`` (a bool is not an int here)."""
    if key not in rec:
        raise MessageError(f"field {key!r} is missing")
    val = rec[key]
    if not isinstance(val, kind) or isinstance(val, bool):
        raise MessageError(f"field {key!r} has type {type(val).__name__}; expected {kind.__name__}")
    return val


def parse_downlink(content: RecordDict) -> Downlink:
    """Validate and parse a downlink; raises :class:`MessageError` subclasses."""
    rec = _config(content)
    op = _get(rec, "op", str)
    if op not in ("setup", "train"):
        raise MessageError(f"op {op!r} is not known; allowed: setup, train")
    rnd, client = int(_get(rec, "r", int)), int(_get(rec, "c", int))
    digest = str(_get(rec, "d", str))
    if op == "setup":
        return Downlink("setup", rnd, client, config_json=str(_get(rec, "cfg", str)), config_digest=digest)
    kind = str(_get(rec, "cu", str))
    if kind not in CATCH_UP_KINDS:
        raise MessageError(f"catch-up kind {kind!r} is not known; allowed: {', '.join(CATCH_UP_KINDS)}")
    cseeds = unpack_seeds(bytes(_get(rec, "cs", bytes)), "cs") if "cs" in rec else ()
    coefs = unpack_f64(bytes(_get(rec, "cc", bytes)), "cc") if "cc" in rec else ()
    if len(cseeds) != len(coefs):
        raise MessageError(f"catch-up has {len(cseeds)} seeds but {len(coefs)} coefficients")
    sizes = _round_sizes(rec, len(cseeds))
    weights = None
    if kind == "full":
        if WEIGHTS_KEY not in content.array_records:
            raise MessageError(f"catch-up 'full' without ArrayRecord {WEIGHTS_KEY!r}")
        weights = {k: a.numpy() for k, a in content.array_records[WEIGHTS_KEY].items()}
    cu = CatchUp(cast(CatchUpKind, kind), _get(rec, "cf", int), _get(rec, "ct", int), cseeds, coefs, weights,
                 round_sizes=sizes)
    if sizes and len(sizes) != cu.to_round - cu.from_round:
        raise MessageError(f"catch-up 'cn' has {len(sizes)} round sizes for rounds {cu.from_round + 1}.."
                           f"{cu.to_round}")
    q = int(_get(rec, "q", int))
    if q < 1:
        raise MessageError(f"q {q} is not allowed; q must be >= 1")
    return Downlink("train", rnd, client, unpack_seeds(bytes(_get(rec, "s", bytes)), "s"),
                    float(_get(rec, "lr", float)), float(_get(rec, "eps", float)), q,
                    cu, config_digest=digest)


def _round_sizes(rec: ConfigRecord, pairs: int) -> tuple[int, ...]:
    """The ``cn`` field: pairs per replayed round, which must add up to the pairs sent."""
    if "cn" not in rec:
        return ()
    data = bytes(_get(rec, "cn", bytes))
    if len(data) % 4:
        raise MessageError(f"cn: {len(data)} bytes is not a multiple of 4 (uint32)")
    sizes = tuple(int(x) for x in np.frombuffer(data, dtype="<u4"))
    if sum(sizes) != pairs:
        raise MessageError(f"catch-up 'cn' round sizes add up to {sum(sizes)} but {pairs} pairs were sent")
    return sizes


def build_setup_reply(partition_id: int) -> RecordDict:
    """The handshake answer: which data partition (client id) this node serves."""
    return RecordDict({CONFIG_KEY: ConfigRecord({"v": SCHEMA_VERSION, "c": int(partition_id)})})


def parse_setup_reply(content: RecordDict) -> int:
    """The client id a node announced in the handshake."""
    return int(_get(_config(content), "c", int))


# -- uplink ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Uplink:
    """A client's reply: K*q projected gradients and what it cost."""

    round: int
    client: int
    scalars: tuple[float, ...]
    seeds_digest: int
    num_examples: int
    loss_mean: float
    loss_last: float
    compute_seconds: float
    peak_memory_bytes: int

    @property
    def train_loss(self) -> float:
        """Mean loss of the client's local steps."""
        return self.loss_mean


def build_uplink(u: Uplink) -> RecordDict:
    """Serialize an :class:`Uplink` into records."""
    return RecordDict({
        CONFIG_KEY: ConfigRecord({"v": SCHEMA_VERSION, "r": u.round, "c": u.client,
                                  "s": pack_f32(u.scalars), "sd": u.seeds_digest}),
        METRIC_KEY: MetricRecord({"n": int(u.num_examples), "lm": float(u.loss_mean),
                                  "ll": float(u.loss_last), "t": float(u.compute_seconds),
                                  "pm": int(u.peak_memory_bytes)}),
    })


@dataclass(frozen=True)
class Expected:
    """What the server sent a client, against which its reply is checked."""

    round: int
    client: int
    seeds: tuple[int, ...]
    q: int
    max_abs_scalar: float = 1e6
    examples: int | None = None  # the training examples the server knows the client used (None: unchecked)


def parse_uplink(content: RecordDict, expected: Expected) -> Uplink:
    """Validate a reply against what was sent; raises a named :class:`MessageError`."""
    rec = _config(content)
    rnd = int(_get(rec, "r", int))
    if rnd != expected.round:
        raise StaleRoundError(f"reply is for round {rnd}; the server is in round {expected.round}. "
                              "Discarding it")
    client = int(_get(rec, "c", int))
    if client != expected.client:
        raise MessageError(f"reply names client {client}; it was sent to client {expected.client}")
    if int(_get(rec, "sd", int)) != seeds_digest(expected.seeds):
        raise UnknownSeedsError(f"client {client} answered seeds that were not sent in round {rnd}")
    payload = bytes(_get(rec, "s", bytes))
    want = len(expected.seeds) * expected.q
    if len(payload) != 4 * want:  # counted from the payload's length, before anything is unpacked
        raise ScalarCountError(f"client {client} sent {len(payload)} bytes of scalars ({len(payload) / 4:g} float32); "
                               f"expected {want} (K={len(expected.seeds)} x q={expected.q})")
    scalars = unpack_f32(payload)
    if not all(math.isfinite(s) for s in scalars):
        raise NonFiniteScalarError(f"client {client} sent non-finite scalars")
    worst = max((abs(s) for s in scalars), default=0.0)
    if worst > expected.max_abs_scalar:
        raise ScalarBoundError(f"client {client} sent |scalar| {worst:.3g} > bound "
                               f"{expected.max_abs_scalar:.3g}")
    try:
        m = content.metric_records[METRIC_KEY]
    except KeyError:
        raise MessageError(f"no MetricRecord {METRIC_KEY!r} in the reply") from None
    n = int(_get(m, "n", int))
    if n < 1:
        raise MessageError(f"client {client} reports {n} examples; expected >= 1")
    if expected.examples is not None and n != expected.examples:
        raise ExampleCountError(f"client {client} reports {n} examples; the server gave it {expected.examples} "
                                "this round (its batches are drawn from its partition by the run's seed)")
    lm, ll = float(_get(m, "lm", float)), float(_get(m, "ll", float))
    if not (math.isfinite(lm) and math.isfinite(ll)):
        raise NonFiniteScalarError(f"client {client} reports a non-finite loss")
    return Uplink(rnd, client, scalars, seeds_digest(expected.seeds), n, lm, ll,
                  float(_get(m, "t", float)), int(_get(m, "pm", int)))
