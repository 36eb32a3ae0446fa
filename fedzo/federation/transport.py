"""How the server reaches its clients, and the handshake that starts every run.

A :class:`Transport` sends Flower ``Message`` objects and returns the replies that
arrived in time: :class:`GridTransport` wraps Flower's ``Grid`` (simulation and
deployment engines); :class:`fedzo.federation.inprocess.InProcessTransport` calls the
client code directly. Fault injection wraps either (:mod:`fedzo.federation.faults`).

Flower's node ids are random per run and nodes register asynchronously, so before the
first round :func:`handshake` waits for ``num_clients`` nodes, sends each a ``setup``
message (the run configuration as JSON, see :mod:`fedzo.federation.messages`) and maps
the partition id each announces to its node id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from flwr.app import Message, RecordDict

from fedzo.errors import FederationError
from fedzo.federation.bytes import MessageSize
from fedzo.federation.messages import MESSAGE_TYPE, Downlink, build_downlink, parse_setup_reply


class Transport(Protocol):
    """How the server reaches clients."""

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        """Wait until ``expected`` nodes are connected; return their ids."""

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        """Send messages, return the replies that arrived within ``timeout``."""

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        """A message to ``node``."""


class GridTransport:
    """Flower's Grid (simulation and deployment engines)."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        """Poll the grid until ``expected`` nodes have registered."""
        deadline = time.monotonic() + timeout
        while True:
            ids = sorted(int(n) for n in self.grid.get_node_ids())
            if len(ids) >= expected:
                return ids
            if time.monotonic() > deadline:
                raise FederationError(f"only {len(ids)} of {expected} nodes connected within {timeout:.0f} s; "
                                      "start more SuperNodes or lower num_clients")
            time.sleep(0.5)

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        """Flower's send-and-receive."""
        return list(self.grid.send_and_receive(list(messages), timeout=timeout))

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        """A train message of ``round_`` (its group)."""
        return Message(content, dst_node_id=node, message_type=MESSAGE_TYPE, group_id=str(round_))


@dataclass(frozen=True)
class Handshake:
    """Which node serves which client, and the bytes the setup messages took."""

    node_of: dict[int, int]  # client id -> node id
    bytes_down: int
    bytes_up: int


def handshake(transport: Transport, setup_json: str, digest: str, num_clients: int, timeout: float, *,
              measured_json: str | None = None) -> Handshake:
    """Client id -> node id for every client ``0..num_clients-1``; raises FederationError.

    ``measured_json``: the setup as a deployment sends it, when ``setup_json`` carries a
    same-machine shortcut (the run's log path) that a real node would not get; the bytes
    are counted for that form, so they do not depend on where the run directory is.
    """
    nodes = transport.node_ids(num_clients, timeout)
    d = Downlink("setup", 0, -1, config_json=setup_json, config_digest=digest)
    msgs = [transport.new_message(build_downlink(d), n, 0) for n in nodes]
    replies = transport.exchange(msgs, timeout)
    measured = replace(d, config_json=measured_json) if measured_json is not None else d
    sent = {n: transport.new_message(build_downlink(measured), n, 0) for n in nodes}
    down = sum(MessageSize.of(m).wire for m in sent.values())
    up = sum(MessageSize.of(r, reply_to=sent.get(int(r.metadata.src_node_id))).wire for r in replies)
    node_of: dict[int, int] = {}
    for rep in replies:
        if rep.has_error():
            raise FederationError(f"node {rep.metadata.src_node_id} failed the handshake: {rep.error.reason}")
        node_of[parse_setup_reply(rep.content)] = int(rep.metadata.src_node_id)
    missing = sorted(set(range(num_clients)) - set(node_of))
    if missing:
        raise FederationError(f"no node announced client(s) {missing[:10]} in the handshake; each "
                              "client id 0..num_clients-1 needs one node (node_config partition-id)")
    return Handshake(node_of, down, up)
