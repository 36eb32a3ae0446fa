"""The handshake: send the run configuration to every node, learn which client each serves.

Flower's node ids are random per run and nodes register asynchronously, so before the
first round the server waits for ``num_clients`` nodes, sends each a ``setup`` message
(the run configuration as JSON, see :mod:`fedzo.federation.messages`) and maps the
partition id each announces to its node id. Used by the FedAvg baseline;
``FederatedServer.handshake`` does the same for the seeds-and-scalars protocol.
"""

from __future__ import annotations

from typing import Any

from fedzo.federation.messages import Downlink, build_downlink, parse_setup_reply


def handshake(transport: Any, setup_json: str, digest: str, num_clients: int, timeout: float) -> dict[int, int]:
    """Client id -> node id for every client ``0..num_clients-1``; raises FederationError."""
    from fedzo.federation.server import FederationError

    nodes = transport.node_ids(num_clients, timeout)
    d = Downlink("setup", 0, -1, config_json=setup_json, config_digest=digest)
    replies = transport.exchange([transport.new_message(build_downlink(d), n, 0) for n in nodes], timeout)
    node_of: dict[int, int] = {}
    for rep in replies:
        if rep.has_error():
            raise FederationError(f"node {rep.metadata.src_node_id} failed the handshake: {rep.error.reason}")
        node_of[parse_setup_reply(rep.content)] = int(rep.metadata.src_node_id)
    missing = sorted(set(range(num_clients)) - set(node_of))
    if missing:
        raise FederationError(f"no node announced client(s) {missing[:10]} in the handshake; each "
                              "client id 0..num_clients-1 needs one node (node_config partition-id)")
    return node_of
