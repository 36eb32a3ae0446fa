"""Byte accounting: every message measured as Flower 1.41 serializes and transports it.

Three figures per message (:meth:`MessageSize.of`), both directions, all record types:

* ``payload``: the serialized ``RecordDict`` (what the protocol itself carries);
* ``message``: the serialized protobuf ``Message`` (payload + metadata) *as Flower sends
  it*: ``message_id`` set to the message's object id when empty and, for a reply,
  ``reply_to_message_id`` set to the object id of the message it answers when empty (the
  SuperLink sets both on the wire; in-process messages lack them: about 66 B each);
* ``wire``: the application bytes Flower 1.41's HTTP fleet transport carries for this
  message between SuperNode and SuperLink: the protobuf *bodies* (no HTTP headers) of

  - a downlink (server -> node, pulled by the node): the ``pull-messages`` request and
    its response (the message proto without content, plus the message's object tree),
    then one ``pull-object`` request and response per node of the object tree (an object
    two parents share, e.g. an array in two records, is pulled twice, as the SuperNode
    does);
  - a reply (node -> server, pushed by the node): the ``push-messages`` request (message
    proto without content, object tree, ClientApp runtime) and its response (reconnect,
    result, the ids of the objects to push, a 36-character session id), then one
    ``push-object`` request and response per distinct object.

  The objects are the inflatable tree of the message (``Message`` -> ``RecordDict`` ->
  ``ConfigRecord`` / ``MetricRecord`` / ``ArrayRecord`` -> ``Array`` -> ``ArrayChunk``),
  each carried as its deflated bytes. ``wire`` assumes neither side already holds one of
  the objects (Flower skips an object the receiving store holds, e.g. an identical record
  of another message still in flight: then ``wire`` is an upper bound), no retry (an
  object pulled before the sender finished pushing it is polled again) and no error.

Not counted by any figure: HTTP request/status lines, headers and chunk framing, node
authentication headers, ``confirm-message-received``, heartbeats, empty polls,
registration, ``get-run``/``get-fab``, TLS. Those are *estimated* by
:func:`estimated_transport_overhead` and reported under a separate, labelled key, never
added to the measured figures; :mod:`fedzo.bench.wire` measures them on loopback.

A message is a reply (pushed) when ``reply_to`` is given, its ``reply_to_message_id`` is
set or it is addressed to the SuperLink's node (``SUPERLINK_NODE_ID``, the node id
:func:`ensure_task_identity` gives a server outside Flower); otherwise it is pulled. Its
own metadata decides the varint widths of its ids (run, nodes, tasks): a message built
in-process (small ids) counts a few bytes less than under the deployment engine (random
64-bit ids). Checked against the bytes a SuperLink and two SuperNodes exchange:
tests/federation/test_wire.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from flwr.app import Message, RecordDict
from flwr.app.message.message import make_message
from flwr.common import serde
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.common.serde_utils import metadata_from_proto, metadata_to_proto
from flwr.proto.fleet_pb2 import (
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
    Reconnect,
)
from flwr.proto.message_pb2 import Message as ProtoMessage
from flwr.proto.message_pb2 import (
    ObjectTree,
    PullObjectRequest,
    PullObjectResponse,
    PushObjectRequest,
    PushObjectResponse,
)
from flwr.proto.node_pb2 import Node
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from flwr.supercore.inflatable.inflatable_object import InflatableObject, iterate_object_tree, no_object_id_recompute

# Measured on loopback with flwr 1.42 (shared/FLOWER.md): 5-9 KB of HTTP traffic per
# message whatever its size, and ~340 B/s up / 51 B/s down of polling per idle node.
TRANSPORT_OVERHEAD_PER_MESSAGE = 5_000
POLL_BYTES_PER_SECOND_UP = 340.0
POLL_BYTES_PER_SECOND_DOWN = 51.0

SESSION_ID_CHARS = 36  # the SuperLink's object-push session id: str(uuid4())
RECONNECT_SECONDS = 5  # PushMessagesResponse.reconnect, fixed by the SuperLink
_OBJECT_ID = "0" * 64  # object ids are SHA-256 hex digests: 64 characters
_SESSION = "0" * SESSION_ID_CHARS

# (path, direction) of the protobuf bodies of one message's transfer; "up" is node ->
# SuperLink, "down" is SuperLink -> node, whichever way the message itself travels.
WirePart = tuple[str, str]


def ensure_task_identity(run_id: int = 1, node_id: int = SUPERLINK_NODE_ID, task_id: int = 1) -> None:
    """Give this process a Flower task identity when none is set (building Messages
    outside a Flower runtime, e.g. the in-process engine or unit tests, needs one). The
    default node is the SuperLink's, the source of every server message in deployment."""
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
    """Serialized size of a whole Message as it is (content or error, plus metadata)."""
    return len(serde.message_to_proto(message).SerializeToString())


def is_reply(message: Message, reply_to: Message | None = None) -> bool:
    """A reply travels node -> server: it answers a message, or is addressed to the SuperLink."""
    md = message.metadata
    return reply_to is not None or bool(md.reply_to_message_id) or md.dst_node_id == SUPERLINK_NODE_ID


def _field(size: int) -> int:
    """Bytes of a non-empty length-delimited protobuf field (tag <= 15) of ``size`` bytes."""
    return 1 + _varint(size) + size


def _varint(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _tree(obj: InflatableObject, sizes: dict[str, int]) -> ObjectTree:
    """``obj``'s object tree (as ``get_object_tree``); records each object's deflated size."""
    children = [_tree(child, sizes) for child in (obj.children or {}).values()]
    oid = obj.object_id
    if oid not in sizes:
        sizes[oid] = len(obj.deflate())
    return ObjectTree(object_id=oid, children=children)


def _sent_form(message: Message, reply_to: Message | None) -> tuple[Message, ProtoMessage]:
    """A copy of the message with the reply id Flower sets on the wire (its object tree),
    and its metadata-only proto with both ids (content replaced by an empty RecordDict,
    as pushed and pulled)."""
    md = metadata_to_proto(message.metadata)
    if reply_to is not None and not md.reply_to_message_id:
        md.reply_to_message_id = reply_to.metadata.message_id or reply_to.object_id
    error = message.error if message.has_error() else None
    copy = make_message(metadata_from_proto(md), content=None if error else message.content, error=error)
    if not md.message_id:
        md.message_id = copy.object_id  # the message_id is not part of the deflated Message
    if error is not None:
        return copy, ProtoMessage(metadata=md, error=serde.error_to_proto(error))
    return copy, ProtoMessage(metadata=md, content=ProtoRecordDict())


def _wire(copy: Message, light: ProtoMessage, reply: bool) -> dict[WirePart, int]:
    """Body bytes by (path, direction) of the transfer of ``copy`` (see :func:`wire_parts`)."""
    md = light.metadata
    sizes: dict[str, int] = {}
    tree = _tree(copy, sizes)
    ids = [t.object_id for t in iterate_object_tree(tree)]
    if reply:
        node = Node(node_id=md.src_node_id)
        request = PushMessagesRequest(node=node, messages_list=[light], message_object_trees=[tree],
                                      clientapp_runtime_list=[0.0])
        response = PushMessagesResponse(reconnect=Reconnect(reconnect=RECONNECT_SECONDS),
                                        results={md.message_id: 0}, objects_to_push=ids, session_id=_SESSION)
        push = PushObjectRequest(node=node, run_id=md.run_id, object_id=_OBJECT_ID, session_id=_SESSION).ByteSize()
        distinct = list(dict.fromkeys(ids))
        return {
            ("push-messages", "up"): request.ByteSize(),
            ("push-messages", "down"): response.ByteSize(),
            ("push-object", "up"): sum(push + _field(sizes[i]) for i in distinct),
            ("push-object", "down"): len(distinct) * PushObjectResponse(stored=True).ByteSize(),
        }
    node = Node(node_id=md.dst_node_id)
    pulled = PullMessagesResponse(messages_list=[light], message_object_trees=[tree])
    pull = PullObjectRequest(node=node, run_id=md.run_id, object_id=_OBJECT_ID).ByteSize()
    found = PullObjectResponse(object_found=True, object_available=True).ByteSize()
    return {
        ("pull-messages", "up"): PullMessagesRequest(node=node).ByteSize(),
        ("pull-messages", "down"): pulled.ByteSize(),
        ("pull-object", "up"): len(ids) * pull,
        ("pull-object", "down"): sum(found + _field(sizes[i]) for i in ids),
    }


def wire_parts(message: Message, reply_to: Message | None = None) -> dict[WirePart, int]:
    """Protobuf body bytes of ``message``'s transfer over Flower's HTTP fleet API, by
    (path, direction); see the module docstring. ``reply_to``: the message a reply
    answers, when the reply lacks ``reply_to_message_id`` (in-process)."""
    with no_object_id_recompute():  # each object id computed once
        copy, light = _sent_form(message, reply_to)
        return _wire(copy, light, is_reply(message, reply_to))


@dataclass(frozen=True)
class MessageSize:
    """Measured size of one message: ``payload``, ``message`` and ``wire`` bytes (see the
    module docstring); ``wire`` is 0 where a size was built by hand without it."""

    payload: int
    message: int
    wire: int = 0

    @classmethod
    def of(cls, message: Message, reply_to: Message | None = None) -> MessageSize:
        """Measure ``message`` without changing it; ``reply_to``: the message it answers
        (needed for a reply built in-process, whose ``reply_to_message_id`` is empty)."""
        with no_object_id_recompute():  # each object id computed once
            copy, light = _sent_form(message, reply_to)
            wire = sum(_wire(copy, light, is_reply(message, reply_to)).values())
        proto = serde.message_to_proto(message)
        payload = proto.content.ByteSize() if message.has_content() else 0  # = payload_bytes(content)
        proto.metadata.CopyFrom(light.metadata)
        return cls(payload, proto.ByteSize(), wire)


def estimated_transport_overhead(messages: int, seconds: float = 0.0) -> dict[str, float]:
    """Labelled estimate of the bytes the transport adds (not measured)."""
    return {
        "estimated_transport_bytes_per_message": float(TRANSPORT_OVERHEAD_PER_MESSAGE),
        "estimated_transport_bytes": float(messages * TRANSPORT_OVERHEAD_PER_MESSAGE),
        "estimated_polling_bytes": float(seconds * (POLL_BYTES_PER_SECOND_UP + POLL_BYTES_PER_SECOND_DOWN)),
    }
