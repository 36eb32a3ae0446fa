"""The contract between the round engine and a federated protocol (its plug-ins).

A protocol builds each client's message, parses replies into updates, says what a
client's work was (for the clock), and commits the kept updates to the global model;
the engine (:mod:`fedzo.federation.server.engine`) does everything else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from flwr.app import RecordDict

from fedzo.devices.clock import ClientWork
from fedzo.federation.wire.messages import MessageError
from fedzo.records import ClientRecord
from fedzo.runs import RunDir


class ClientUpdate(Protocol):
    """What the engine reads from any protocol's parsed reply."""

    num_examples: int
    train_loss: float
    compute_seconds: float
    peak_memory_bytes: int


@dataclass(frozen=True)
class Outgoing:
    """A protocol's message body for one client, and the catch-up it carries."""

    content: RecordDict
    catch_up_entries: int = 0
    catch_up_bytes: int = 0  # the catch-up's share of the serialized content


U = TypeVar("U", bound=ClientUpdate)


class RoundProtocol(Protocol[U]):
    """A federated protocol, as the round engine drives it."""

    method: str  # summary.method
    setup_json: str
    digest: str

    def open(self, run: RunDir, resume: bool, last_metric_round: int, clients: Sequence[ClientRecord]) -> int:
        """Start fresh, or restore durable state (``resume``) and return the last round to
        keep of the ``last_metric_round`` the metrics hold (-1: start over)."""

    def begin_round(self, round_: int) -> None:
        """Prepare what every message of ``round_`` shares (seeds, lr, global weights)."""

    def downlink(self, round_: int, client: int) -> Outgoing:
        """The message body for ``client``."""

    def parse(self, round_: int, client: int, content: RecordDict) -> U:
        """A reply as an update; raises :class:`~fedzo.federation.wire.messages.MessageError`."""

    def screen(self, round_: int, updates: Mapping[int, U]) -> dict[int, MessageError]:
        """The valid replies of a round to reject once all are in, by what they show together
        (a scalar far beyond the run's scale); client -> the error, counted by its code."""

    def work(self, round_: int, client: int, update: U | None, down_bytes: int, up_bytes: int,
             catch_up_entries: int) -> ClientWork:
        """What a client did, for the clock (``update`` None: modelled, nothing reported)."""

    def commit(self, round_: int, accepted: dict[int, U], synced: Sequence[int]) -> None:
        """Aggregate the kept updates (none: a skipped round) and move the global model."""

    def checkpoint(self, round_: int) -> None:
        """Persist what the update log does not hold (after the round's records)."""

    def evaluate(self) -> dict[str, Any]:
        """Metrics of the global model on the evaluation split."""

    def round_fields(self) -> dict[str, Any]:
        """Extra round-record fields (catch-up history held)."""

    def summary_fields(self) -> dict[str, Any]:
        """Extra summary fields (catch-up policy, local epochs, model digest)."""
