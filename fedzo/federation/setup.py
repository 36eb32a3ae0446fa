"""The run configuration a client receives in the handshake, and its digest."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from fedzo.config.scenario import Scenario, scenario_from_dict


def config_digest(config_json: str) -> str:
    """Short digest naming a run configuration (sent with every train message)."""
    return hashlib.sha256(config_json.encode()).hexdigest()[:12]


@dataclass
class ClientSetup:
    """What a client needs besides the messages: the scenario and where to re-sync from.

    The fleet stays with the server (it alone runs the clock): a board needs no device
    catalog to take part.
    """

    scenario: Scenario
    resync_log: str | None = None  # the run's update log: a path, or ray-actor:NAME (fedzo.federation.logserver)

    def __post_init__(self) -> None:
        if self.scenario.fleet is not None:
            self.scenario = self.scenario.model_copy(update={"fleet": None})

    def to_json(self) -> str:
        """Canonical JSON (its digest names the setup)."""
        return json.dumps({"scenario": self.scenario.model_dump(mode="json"), "resync_log": self.resync_log},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ClientSetup:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(scenario_from_dict(data["scenario"], "setup message"), data.get("resync_log"))

    @property
    def digest(self) -> str:
        """:func:`config_digest` of :meth:`to_json`."""
        return config_digest(self.to_json())
