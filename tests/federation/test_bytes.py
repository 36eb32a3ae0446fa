"""Byte accounting measures serialized messages of every record type."""

from __future__ import annotations

import numpy as np
from flwr.app import Message

from fedzo.federation.bytes import MessageSize, ensure_task_identity, estimated_transport_overhead, payload_bytes
from fedzo.federation.messages import CatchUp, Downlink, Uplink, build_downlink, build_uplink, seeds_digest


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
