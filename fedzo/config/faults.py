"""The ``faults:`` section of a scenario: which injected client faults, how often.

Which clients are faulty is a pure function of ``(faults.seed, round, client)``; see
:mod:`fedzo.federation.transports.faults` for the draw, what each fault does and how it is counted.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedzo.config.sections import Section

DELIVERY_FAULTS: tuple[str, ...] = ("crash_before", "crash_after", "straggler", "dropout", "duplicate", "stale")
BYZANTINE_KINDS: tuple[str, ...] = ("sign_flip", "scale", "nan", "inf", "random")


class ByzantineConfig(Section):
    """Clients whose reply scalars are tampered with."""

    fraction: float = Field(0.0, ge=0, le=1, description="fraction of a round's participants that are Byzantine")
    kind: Literal["sign_flip", "scale", "nan", "inf", "random"] = Field(
        "sign_flip", description="sign_flip: -s; scale: s x 1e6; nan / inf: non-finite scalars; "
        "random: Gaussian noise 10x the honest scale")
    persistent: bool = Field(
        False, description="the same clients lie in every round they take part in: round(fraction x "
        "num_clients) clients drawn once by faults.seed (default: re-drawn per client-round)")


class FaultsConfig(Section):
    """Injected client faults (fractions of each round's participants; 0 = off)."""

    seed: int = Field(0, ge=0, description="seed of the draw of faulty clients per (round, client)")
    crash_before: float = Field(0.0, ge=0, le=1, description="crash before training (error reply)")
    crash_after: float = Field(0.0, ge=0, le=1, description="crash after training (reply lost)")
    straggler: float = Field(0.0, ge=0, le=1, description="reply after the round timeout (dropped)")
    dropout: float = Field(0.0, ge=0, le=1, description="leave mid-round (no reply)")
    duplicate: float = Field(0.0, ge=0, le=1, description="reply delivered twice")
    stale: float = Field(0.0, ge=0, le=1, description="reply carrying the previous round's number (late or replayed)")
    byzantine: ByzantineConfig = Field(default_factory=ByzantineConfig, description="tampered scalars")

    @model_validator(mode="after")
    def _fractions(self) -> FaultsConfig:
        total = sum(getattr(self, k) for k in DELIVERY_FAULTS)
        if total > 1 + 1e-12:
            raise ValueError(f"faults: the delivery fault fractions add up to {total:g} > 1 "
                             f"({', '.join(DELIVERY_FAULTS)}); a client suffers at most one per round")
        return self

    @property
    def active(self) -> bool:
        """Whether any fault is injected."""
        return any(getattr(self, k) > 0 for k in DELIVERY_FAULTS) or self.byzantine.fraction > 0
