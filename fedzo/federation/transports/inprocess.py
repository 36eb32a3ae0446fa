"""The in-process loopback engine: the same client and server code, called directly.

Messages are real Flower ``Message`` objects (so they are measured exactly as in the
other engines), delivered by a function call instead of the network, one client after
another. Each node keeps its own ``Context`` (node config and persistent state) like a
SuperNode does; the model cache is shared like a simulation worker's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedzo.federation.client import worker as client_mod
from fedzo.federation.wire.bytes import ensure_task_identity
from fedzo.federation.wire.messages import MESSAGE_TYPE

_NODE_BASE = 1000  # node ids are arbitrary, as in Flower; clients learn theirs by handshake


class InProcessTransport:
    """``num_nodes`` nodes served by :func:`fedzo.federation.client.worker.handle` in this process."""

    clients_in_server = True
    nodes_restart = False

    def __init__(self, num_nodes: int, *, run_id: int = 1) -> None:
        ensure_task_identity(run_id=run_id)
        # node ids deliberately not equal to partition ids, and listed in a scrambled order
        self.contexts = {
            _NODE_BASE + 7 * i: Context(run_id=run_id, node_id=_NODE_BASE + 7 * i,
                                        node_config={"partition-id": i, "num-partitions": num_nodes},
                                        state=RecordDict(), run_config={})
            for i in range(num_nodes)
        }

    def node_ids(self, expected: int, timeout: float) -> list[int]:
        ids = sorted(self.contexts, reverse=True)
        return ids[:expected] if expected else ids

    def new_message(self, content: RecordDict, node: int, round_: int) -> Message:
        return Message(content, dst_node_id=node, message_type=MESSAGE_TYPE, group_id=str(round_))

    def exchange(self, messages: Sequence[Message], timeout: float) -> list[Message]:
        replies = []
        for msg in messages:
            ctx = self.contexts[msg.metadata.dst_node_id]
            try:
                reply = Message(client_mod.handle(msg.content, ctx), reply_to=msg)
            except Exception as exc:  # noqa: BLE001 - a failing client is reported as an error reply, as Flower does
                reply = Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            replies.append(reply)
        return replies


class InProcessGrid(Grid):
    """A Flower ``Grid`` over an :class:`InProcessTransport`: lets Flower's own strategies
    (``FedAvg.start``) drive the in-process nodes exactly as they drive a real Grid."""

    def __init__(self, transport: InProcessTransport) -> None:
        self.transport = transport
        self._run = Run.create_empty(1)
        self._pending: dict[str, Message] = {}
        self._next_id = 0

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return sorted(self.transport.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Deliver now; the replies wait for :meth:`pull_messages` under generated ids."""
        ids = []
        for reply in self.transport.exchange(list(messages), timeout=0.0):
            self._next_id += 1
            ids.append(f"inprocess-{self._next_id}")
            self._pending[ids[-1]] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._pending.pop(i) for i in message_ids if i in self._pending]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.transport.exchange(list(messages), timeout=timeout or 0.0)
