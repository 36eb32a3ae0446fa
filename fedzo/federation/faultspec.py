"""The ``faults:`` section of a scenario and the draw of faulty clients (no Flower imports).

Which clients are faulty is a pure function of ``(faults.seed, round, client)``; see
:mod:`fedzo.federation.faults` for what each fault does and how it is counted.
"""

from __future__ import annotations

import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FAULT_TAG = 0xFA17
BYZANTINE_TAG = 0xB42A
DELIVERY_FAULTS: tuple[str, ...] = ("crash_before", "crash_after", "straggler", "dropout", "duplicate", "stale")
BYZANTINE_KINDS: tuple[str, ...] = ("sign_flip", "scale", "nan", "inf", "random")


class ByzantineConfig(BaseModel):
    """Clients whose reply scalars are tampered with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fraction: float = Field(0.0, ge=0, le=1, description="fraction of a round's participants that are Byzantine")
    kind: Literal["sign_flip", "scale", "nan", "inf", "random"] = Field(
        "sign_flip", description="sign_flip: -s; scale: s x 1e6; nan / inf: non-finite scalars; "
        "random: Gaussian noise 10x the honest scale")


class FaultsConfig(BaseModel):
    """Injected client faults (fractions of each round's participants; 0 = off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


def delivery_fault(cfg: FaultsConfig, round_: int, client: int) -> str | None:
    """The delivery fault of ``client`` in ``round_`` (or None): a pure function of the seeds."""
    from fedzo.zo.seeds import derive_seed

    u = random.Random(derive_seed(cfg.seed, FAULT_TAG, round_, client)).random()
    edge = 0.0
    for kind in DELIVERY_FAULTS:
        frac = float(getattr(cfg, kind))
        if frac > 0 and edge <= u < edge + frac:
            return kind
        edge += frac
    return None


def is_byzantine(cfg: FaultsConfig, round_: int, client: int) -> bool:
    """Whether ``client`` tampers with its scalars in ``round_``."""
    from fedzo.zo.seeds import derive_seed

    frac = cfg.byzantine.fraction
    return frac > 0 and random.Random(derive_seed(cfg.seed, BYZANTINE_TAG, round_, client)).random() < frac


