"""How the server reaches its clients, and the handshake that starts every run.

A :class:`Transport` sends Flower ``Message`` objects and returns the replies that
arrived in time: :class:`GridTransport` wraps Flower's ``Grid`` (simulation and
deployment engines); :class:`fedzo.federation.transports.inprocess.InProcessTransport` calls the
client code directly. Fault injection wraps either (:mod:`fedzo.federation.transports.faults`).

Flower's node ids are random per run and nodes register asynchronously, so before the
first round :func:`handshake` waits for ``num_clients`` nodes, sends each a ``setup``
message (the run configuration as JSON, see :mod:`fedzo.federation.wire.messages`) and maps
the partition id each announces to its node id. A deployment's SuperNode that is
restarted registers again under a new id: before each round :meth:`Membership.refresh` sets up the
nodes that appeared since and maps their clients to them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from flwr.app import Message, RecordDict

from fedzo.errors import FederationError
from fedzo.federation.wire.bytes import MessageSize
from fedzo.federation.wire.messages import MESSAGE_TYPE, Downlink, build_downlink, parse_setup_reply


class Transport(Protocol):
    """How the server reaches clients, and two facts the round loop asks of it:
    ``clients_in_server`` (the clients run in the server's own process, so a client's
    measured peak memory is the server's and is not reported) and ``nodes_restart`` (a node
    may come back under a new id between rounds, so membership is refreshed each round)."""

    @property
    def clients_in_server(self) -> bool:
        """Whether the clients run in the server's process."""

    @property
    def nodes_restart(self) -> bool:
        """Whether a node may come back under a new id between rounds."""

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        """Wait until ``expected`` nodes are connected; return their ids (``expected`` 0:
        the nodes connected now)."""

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        """Send messages, return the replies that arrived within ``timeout``."""

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        """A message to ``node``."""


class GridTransport:
    """Flower's Grid (simulation and deployment engines): ``nodes_restart`` for a deployment,
    whose SuperNodes may restart under new ids; a simulation's virtual nodes keep theirs."""

    clients_in_server = False

    def __init__(self, grid: Any, *, nodes_restart: bool = False) -> None:
        self.grid = grid
        self.nodes_restart = nodes_restart

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


# Flower's error codes for a node whose ClientApp failed to load, raised or crashed: the
# node is up and its reason is final (a dead node, NODE_UNAVAILABLE, may come back as another)
APP_FAILED = (1, 2, 8)
UNREACHABLE = " (unreachable)"


@dataclass(frozen=True)
class Handshake:
    """Which node serves which client, and the bytes the setup messages took."""

    node_of: dict[int, int]  # client id -> node id
    bytes_down: int
    bytes_up: int


def _setup(transport: Transport, nodes: Sequence[int], setup_json: str, digest: str, timeout: float,
           measured_json: str | None) -> tuple[Handshake, list[tuple[int, str]]]:
    """Send the setup to ``nodes``; the client ids they announced, the bytes, and the nodes
    that answered with an error (one gone since it registered) with their errors."""
    d = Downlink("setup", 0, -1, config_json=setup_json, config_digest=digest)
    msgs = [transport.new_message(build_downlink(d), n, 0) for n in nodes]
    replies = transport.exchange(msgs, timeout) if msgs else []
    measured = replace(d, config_json=measured_json) if measured_json is not None else d
    sent = {n: transport.new_message(build_downlink(measured), n, 0) for n in nodes}
    down = sum(MessageSize.of(m).wire for m in sent.values())
    up = sum(MessageSize.of(r, reply_to=sent.get(int(r.metadata.src_node_id))).wire for r in replies)
    node_of: dict[int, int] = {}
    errors: list[tuple[int, str]] = []
    for rep in replies:
        if rep.has_error():
            known = "" if rep.error.code in APP_FAILED else UNREACHABLE
            errors.append((int(rep.metadata.src_node_id), f"node {rep.metadata.src_node_id}: {rep.error.reason}{known}"))
        else:
            _announce(node_of, parse_setup_reply(rep.content), int(rep.metadata.src_node_id))
    return Handshake(node_of, down, up), errors


def _announce(node_of: dict[int, int], client: int, node: int) -> None:
    """Map ``client`` to ``node``; two nodes announcing one client is a setup error."""
    if client in node_of and node_of[client] != node:
        raise FederationError(f"nodes {node_of[client]} and {node} both announced client {client} "
                              "(node_config partition-id); give each SuperNode its own partition id")
    node_of[client] = node


def _check_announced(node_of: dict[int, int], num_clients: int) -> None:
    """Partition ids outside ``0..num_clients-1`` are a setup error, reported at once."""
    outside = sorted(c for c in node_of if not 0 <= c < num_clients)
    if outside:
        nodes = ", ".join(f"node {node_of[c]}: {c}" for c in outside[:5])
        raise FederationError(f"nodes announced partition ids outside 0..{num_clients - 1} "
                              f"(federation.num_clients {num_clients}): {nodes}; set each SuperNode's "
                              "node_config partition-id to one of 0..num_clients-1")


def handshake(transport: Transport, setup_json: str, digest: str, num_clients: int, timeout: float, *,
              measured_json: str | None = None) -> Handshake:
    """Client id -> node id for every client ``0..num_clients-1``; raises FederationError.

    ``measured_json``: the setup as a deployment sends it, when ``setup_json`` carries a
    same-machine shortcut (the run's log path) that a real node would not get; the bytes
    are counted for that form, so they do not depend on where the run directory is.
    A node that fails the setup (one that died after registering, still listed until the
    SuperLink notices) is left out as long as every client id has a node. Nodes that stay
    silent are sent the setup again every ``max(60 s, timeout / 4)`` (a SuperLink can drop
    a reply under load), together with nodes that registered meanwhile, until ``timeout``.
    """
    deadline = time.monotonic() + timeout
    pending = transport.node_ids(num_clients, timeout)
    node_of: dict[int, int] = {}
    errors: list[str] = []
    failed: set[int] = set()
    down = up = 0
    while True:
        wait = max(1.0, min(deadline - time.monotonic(), max(60.0, timeout / 4)))
        hs, errs = _setup(transport, pending, setup_json, digest, wait, measured_json)
        for c, node in hs.node_of.items():
            _announce(node_of, c, node)
        _check_announced(node_of, num_clients)
        errors += [e for _, e in errs]
        failed |= {n for n, _ in errs}
        down, up = down + hs.bytes_down, up + hs.bytes_up
        missing = sorted(set(range(num_clients)) - set(node_of))
        if not missing or time.monotonic() >= deadline:
            break
        answered = set(node_of.values()) | failed
        pending = [n for n in transport.node_ids(0, 0.0) if n not in answered]
        app_failed = [n for n, e in errs if not e.endswith(UNREACHABLE)]  # the node's app said why: final
        if not pending and app_failed and len(app_failed) >= len(missing):
            raise FederationError(f"client(s) {missing[:10]} have no node: the setup failed on "
                                  f"{len(failed)} node(s) ({'; '.join(errors[:5])})")
        if not pending:
            time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    if missing:
        why = f"; failed: {'; '.join(errors[:5])}" if errors else ""
        raise FederationError(f"no node announced client(s) {missing[:10]} in the handshake; each "
                              f"client id 0..num_clients-1 needs one node (node_config partition-id){why}")
    return Handshake(node_of, down, up)


@dataclass
class Membership:
    """Which node serves which client, kept current as nodes come back under new ids."""

    node_of: dict[int, int]  # client id -> node id
    known: set[int]  # nodes already set up (or that failed to be)
    setup_json: str
    digest: str
    timeout: float
    measured_json: str | None = None

    def refresh(self, transport: Transport) -> tuple[int, int]:
        """Set up the connected nodes not seen before (a restarted SuperNode registers under a
        new node id) and map the clients they announce to them; returns the (up, down) bytes.

        The node's on-disk cache still holds its synced model, so its next catch-up
        continues from there.
        """
        new = [n for n in transport.node_ids(0, 0.0) if n not in self.known]
        if not new:
            return 0, 0
        hs, _ = _setup(transport, new, self.setup_json, self.digest, self.timeout, self.measured_json)
        self.known |= set(new)
        for c, node in sorted(hs.node_of.items()):
            if c in self.node_of:
                print(f"client {c} rejoined on node {node} (was node {self.node_of[c]})", flush=True)
                self.node_of[c] = node
        return hs.bytes_up, hs.bytes_down
