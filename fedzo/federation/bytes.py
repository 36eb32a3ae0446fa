"""Byte accounting: every message measured as Flower serializes it.

Two figures per message, both directions, all record types (Config, Metric, Array):

* ``payload``: the serialized ``RecordDict`` (what the protocol itself carries);
* ``message``: the serialized protobuf ``Message`` (payload + Flower metadata).

Transport overhead (gRPC/HTTP framing, TLS, polling) is not measurable from here: it is
*estimated* by :func:`estimated_transport_overhead` from FLOWER.md's loopback probe and
reported under a separate, labelled key, never added to the measured figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import Message, RecordDict
from flwr.common import serde

# Measured on loopback with flwr 1.42 (shared/FLOWER.md): 5-9 KB of HTTP traffic per
# message whatever its size, and ~340 B/s up / 51 B/s down of polling per idle node.
TRANSPORT_OVERHEAD_PER_MESSAGE = 5_000
POLL_BYTES_PER_SECOND_UP = 340.0
POLL_BYTES_PER_SECOND_DOWN = 51.0


def ensure_task_identity(run_id: int = 1, node_id: int = 0, task_id: int = 1) -> None:
    """Give this process a Flower task identity when none is set (building Messages
    outside a Flower runtime, e.g. the in-process engine or unit tests, needs one)."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("run_id", run_id), ("node_id", node_id), ("task_id", task_id)):
        try:
            getattr(TaskIdentity, attr)
        except RuntimeError:
            setattr(TaskIdentity, attr, value)


def payload_bytes(content: RecordDict) -> int:
    """Serialized size of a RecordDict (all record types)."""
    return len(serde.recorddict_to_proto(content).SerializeToString())


def message_bytes(message: Message) -> int:
    """Serialized size of a whole Message (content or error, plus metadata)."""
    return len(serde.message_to_proto(message).SerializeToString())


@dataclass(frozen=True)
class MessageSize:
    """Measured size of one message."""

    payload: int
    message: int

    @classmethod
    def of(cls, message: Message) -> MessageSize:
        """Measure ``message``."""
        payload = payload_bytes(message.content) if message.has_content() else 0
        return cls(payload, message_bytes(message))


def estimated_transport_overhead(messages: int, seconds: float = 0.0) -> dict[str, float]:
    """Labelled estimate of the bytes the transport adds (not measured)."""
    return {
        "estimated_transport_bytes_per_message": float(TRANSPORT_OVERHEAD_PER_MESSAGE),
        "estimated_transport_bytes": float(messages * TRANSPORT_OVERHEAD_PER_MESSAGE),
        "estimated_polling_bytes": float(seconds * (POLL_BYTES_PER_SECOND_UP + POLL_BYTES_PER_SECOND_DOWN)),
    }
