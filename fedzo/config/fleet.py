"""The ``fleet:`` section: which device each client runs on, and what happens to those that
cannot train. Without a ``fleet:`` every client runs on the ``host`` stand-in (this
machine, always available; see :mod:`fedzo.federation.fleet`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedzo.config.sections import Section
from fedzo.errors import ConfigError


def _known_profiles() -> dict[str, Any]:
    from fedzo.devices.profiles import load_profiles

    return load_profiles()


class DeviceGroup(Section):
    """``count`` clients running on device profile ``profile`` (a name in clients/)."""

    profile: str = Field(description="device profile name (see clients/*.yaml)")
    count: int = Field(1, ge=1, description="clients of this kind")

    @field_validator("profile")
    @classmethod
    def _known(cls, v: str) -> str:
        try:
            known = _known_profiles()
        except ConfigError as exc:  # a broken catalog is reported as such
            raise ValueError(f"device catalog could not be read: {exc}") from None
        if v not in known:
            raise ValueError(f"{v!r} is not a known profile; known: {', '.join(sorted(known))}")
        return v


class FleetConfig(Section):
    """Which devices the clients run on, and what happens to those that cannot train."""

    devices: list[DeviceGroup] = Field(
        default_factory=list,
        description="device mix; counts must add up to federation.num_clients "
        "(empty: every client is a default_profile device)")
    default_profile: str = Field("laptop-cpu", description="profile of every client when devices is empty")
    memory_policy: Literal["refuse", "exclude"] = Field(
        "refuse", description="a client whose configuration does not fit its memory budget: refuse the "
        "scenario with the reason, or exclude the client and report it")
    deadline_seconds: float | None = Field(
        None, gt=0, description="simulated seconds after which a round closes; later clients are dropped")
    over_commit: float = Field(
        0.0, ge=0, le=4, description="sample this fraction more clients and keep the first to finish")
    compute_model: Literal["flops", "measured"] = Field(
        "flops", description="simulated local compute: flops (priced from the work of each client's own "
        "batches: by the calibration when one is given, else FLOPs over the device's sustained rate, an "
        "estimate; deterministic) or measured (host seconds x the profile's speed ratio; deadline, over-commit "
        "and availability decisions then depend on host timing and runs no longer reproduce exactly)")
    measure_memory: bool = Field(
        False, description="before round 1, run one client's real step (fedzo's own objective, perturber and "
        "optimizer at the run's batch size and token limit) in an isolated process and record its peak memory "
        "next to the modelled one")
    calibration: str | None = Field(
        None, description="calibration of the reference host (fedzo calibrate): a name in the device catalog "
        "(reference-host: clients/reference-host.calibration.json) or a path; without one, compute times are "
        "FLOP estimates and the run says so")

    @model_validator(mode="after")
    def _known_default(self) -> FleetConfig:
        if not self.devices:  # the default profile is used
            try:
                DeviceGroup._known(self.default_profile)
            except ValueError as exc:
                raise ValueError(f"fleet.default_profile: {exc}") from None
        return self

    def profiles_per_client(self, num_clients: int) -> list[str]:
        """Profile name of each client id, in order."""
        if not self.devices:
            return [self.default_profile] * num_clients
        out: list[str] = []
        for g in self.devices:
            out += [g.profile] * g.count
        return out
