"""A round's replies: one per client picked, surplus ones counted, each checked against
what its client was sent (by the protocol's parser). Invalid replies are counted, never
raised; replies are keyed by client id, so nothing depends on arrival order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from flwr.app import Message, RecordDict

from fedzo.federation.wire.messages import MessageError

U = TypeVar("U")


@dataclass
class Collected(Generic[U]):
    """A round's replies: the valid updates, the rejected clients, and the surplus."""

    updates: dict[int, U]  # client -> parsed update
    rejected: dict[int, str]  # client -> reason code (schema error code, or "failed")
    reasons: dict[int, str]  # client -> human-readable reason
    messages: dict[int, Message]  # client -> the reply picked (valid or not)
    extras: dict[int, list[str]]  # client -> codes of surplus replies
    unknown: int = 0  # replies from nodes that are not in this round
    surplus: dict[int, list[Message]] = field(default_factory=dict)  # client -> the surplus replies themselves

    def reject(self, client: int, code: str, reason: str) -> None:
        """Move a valid update to the rejected ones (what the replies show together)."""
        del self.updates[client]
        self.rejected[client], self.reasons[client] = code, reason


def _parse_one(rep: Message, client: int, parse: Callable[[int, RecordDict], U]) -> tuple[U | None, str, str]:
    if not rep.has_content():
        return None, "failed", rep.error.reason or "client error"
    try:
        return parse(client, rep.content), "", ""
    except MessageError as exc:
        return None, exc.code, str(exc)


def collect_replies(replies: Iterable[Message], client_of_node: Mapping[int, int],
                    parse: Callable[[int, RecordDict], U],
                    client_of_message: Mapping[str, int] | None = None) -> Collected[U]:
    """Pick one reply per client: the first that validates, else the first that arrived.

    Other replies of the same client are counted in ``extras`` by their rejection code
    (``duplicate`` when they would have validated too); replies from nodes outside the
    round are counted in ``unknown``. ``parse(client, content)`` raises
    :class:`~fedzo.federation.wire.messages.MessageError` for an invalid reply. An error reply
    that comes from no node of the round (Flower answers "node unavailable" for a node that
    died from the SuperLink's own node id) is the failure of the client whose message it
    answers, found by ``client_of_message`` (message id -> client).
    """
    by_client: dict[int, list[Message]] = {}
    unknown = 0
    for rep in replies:
        c = client_of_node.get(int(rep.metadata.src_node_id))
        if c is None and rep.has_error() and client_of_message:
            c = client_of_message.get(rep.metadata.reply_to_message_id)
        if c is None:
            unknown += 1
            continue
        by_client.setdefault(c, []).append(rep)
    out: Collected[U] = Collected({}, {}, {}, {}, {}, unknown)
    for c in sorted(by_client):
        parsed = [_parse_one(rep, c, parse) for rep in by_client[c]]
        valid = [i for i, (u, _, _) in enumerate(parsed) if u is not None]
        pick = valid[0] if valid else 0
        update, code, reason = parsed[pick]
        out.messages[c] = by_client[c][pick]
        if update is not None:
            out.updates[c] = update
        else:
            out.rejected[c], out.reasons[c] = code, reason
        surplus = [p[1] or "duplicate" for i, p in enumerate(parsed) if i != pick]
        if surplus:
            out.extras[c] = surplus
            out.surplus[c] = [m for i, m in enumerate(by_client[c]) if i != pick]
    return out
