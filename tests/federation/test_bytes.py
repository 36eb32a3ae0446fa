"""Byte accounting measures serialized messages of every record type."""

from __future__ import annotations

import uuid

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.app.message import remove_content_from_message
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import (
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
    PushMessagesResponse,
    Reconnect,
)
from flwr.proto.message_pb2 import PullObjectRequest, PullObjectResponse, PushObjectRequest, PushObjectResponse
from flwr.proto.node_pb2 import Node
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.object_store.in_memory_object_store import InMemoryObjectStore

from fedzo.federation.wire.bytes import (
    MessageSize,
    ensure_task_identity,
    estimated_transport_overhead,
    message_bytes,
    payload_bytes,
    wire_parts,
)
from fedzo.federation.wire.messages import CatchUp, Downlink, Uplink, build_downlink, build_uplink, seeds_digest


def test_uplink_for_k10_q1_is_under_200_bytes() -> None:
    seeds = tuple(range(2**62, 2**62 + 10))
    up = Uplink(1, 3, tuple(0.1 * i for i in range(10)), seeds_digest(seeds), 160, 0.69, 0.68, 1.5, 2**30)
    assert payload_bytes(build_uplink(up)) <= 200


def test_weights_are_counted() -> None:
    ensure_task_identity()
    w = {"w": np.zeros(1000, dtype=np.float32)}
    small = Downlink("train", 1, 0, (1,), 0.1, 0.1, 1)
    big = Downlink("train", 1, 0, (1,), 0.1, 0.1, 1, CatchUp("full", 0, 0, weights=w))
    s = MessageSize.of(Message(build_downlink(small), dst_node_id=5, message_type="train"))
    b = MessageSize.of(Message(build_downlink(big), dst_node_id=5, message_type="train"))
    assert b.payload - s.payload >= 4000
    assert s.message > s.payload


def test_transport_overhead_is_labelled_as_estimate() -> None:
    est = estimated_transport_overhead(4, 10.0)
    assert all(k.startswith("estimated_") for k in est)


def _downlink(weights: dict[str, np.ndarray] | None = None) -> Message:
    ensure_task_identity()
    cu = CatchUp("full", 0, 0, weights=weights) if weights else CatchUp()
    return Message(build_downlink(Downlink("train", 1, 0, (1, 2, 3), 0.1, 0.1, 1, cu)), dst_node_id=5,
                   message_type="train", group_id="1")


def _uplink_content() -> RecordDict:
    seeds = (1, 2, 3)
    return build_uplink(Uplink(1, 0, (0.5, -0.25, 0.125), seeds_digest(seeds), 8, 0.7, 0.6, 1.5, 2**20))


def _as_sent(msg: Message) -> None:
    """Give ``msg`` its message id as Flower's Grid (and the SuperNode, for a reply) does."""
    msg.metadata.__dict__["_message_id"] = msg.object_id


def test_message_figure_counts_the_ids_flower_sets() -> None:
    down = _downlink()
    reply = Message(_uplink_content(), reply_to=down)  # in-process: neither id is set
    in_process = (message_bytes(down), message_bytes(reply))
    sizes = (MessageSize.of(down), MessageSize.of(reply, reply_to=down))
    assert down.metadata.message_id == reply.metadata.message_id == reply.metadata.reply_to_message_id == ""
    assert (message_bytes(down), message_bytes(reply)) == in_process  # measuring changed nothing
    _as_sent(down)
    sent_reply = Message(_uplink_content(), reply_to=down)  # now carries reply_to_message_id
    _as_sent(sent_reply)
    assert (message_bytes(down), message_bytes(sent_reply)) == (sizes[0].message, sizes[1].message)
    assert sizes[0].message - in_process[0] in (66, 67)  # message_id: tag, length, 64 hex digits
    assert sizes[1].message - in_process[1] in (132, 133, 134)  # and reply_to_message_id
    assert MessageSize.of(down) == sizes[0] and MessageSize.of(sent_reply, reply_to=down) == sizes[1]


def test_wire_is_stable_for_equal_content_and_exceeds_the_message() -> None:
    w = {"w": np.arange(64, dtype=np.float32)}
    a, b = MessageSize.of(_downlink(w)), MessageSize.of(_downlink(w))
    assert a == b and a.wire > a.message > a.payload
    reply = Message(_uplink_content(), reply_to=_downlink())
    assert MessageSize.of(reply).wire == MessageSize.of(Message(_uplink_content(), reply_to=_downlink())).wire
    assert MessageSize(1, 2) == MessageSize(1, 2, 0)  # hand-built sizes need no wire figure


def test_wire_is_what_flowers_fleet_calls_carry() -> None:
    """Rebuild the protobuf bodies with Flower's own functions: the node's object store picks
    what it pulls (an array two records share is pulled twice), the SuperLink's what is pushed."""
    down = _downlink({"a": np.zeros(6, dtype=np.float32), "b": np.ones((2, 3), dtype=np.float32)})
    down.content["x"] = ArrayRecord({"a": Array(np.zeros(6, dtype=np.float32))})  # an array under 2 parents
    reply = Message(_uplink_content(), reply_to=down)
    predicted = (wire_parts(down), wire_parts(reply, reply_to=down))
    _as_sent(down)
    reply = Message(_uplink_content(), reply_to=down)
    _as_sent(reply)
    for msg, parts in zip((down, reply), predicted, strict=True):
        md, tree, objects = msg.metadata, get_object_tree(msg), get_all_nested_objects(msg)
        wanted = InMemoryObjectStore().preregister(md.run_id, tree)
        light = message_to_proto(remove_content_from_message(msg))
        if msg is down:
            node = Node(node_id=md.dst_node_id)
            assert len(wanted) == len(set(wanted)) + 2  # the shared array and its chunk
            bodies = [PullMessagesRequest(node=node), PullMessagesResponse(messages_list=[light],
                                                                           message_object_trees=[tree])]
            for oid in wanted:
                bodies += [PullObjectRequest(node=node, run_id=md.run_id, object_id=oid),
                           PullObjectResponse(object_found=True, object_available=True,
                                              object_content=objects[oid].deflate())]
        else:
            node, session = Node(node_id=md.src_node_id), str(uuid.uuid4())
            bodies = [PushMessagesRequest(node=node, messages_list=[light], message_object_trees=[tree],
                                          clientapp_runtime_list=[3.25]),
                      PushMessagesResponse(reconnect=Reconnect(reconnect=5), results={md.message_id: 0},
                                           objects_to_push=wanted, session_id=session)]
            for oid in set(wanted):
                bodies += [PushObjectRequest(node=node, run_id=md.run_id, object_id=oid, session_id=session,
                                             object_content=objects[oid].deflate()), PushObjectResponse(stored=True)]
        assert sum(parts.values()) == sum(b.ByteSize() for b in bodies)
