"""Scenario files: one YAML per experiment, validated into one frozen object.

A scenario is a federated run description (:class:`fedzo.federation.config.FederatedRunConfig`:
model, task, data, the ``federation:`` protocol settings) plus the ``fleet:`` of devices
the clients run on. Unknown keys, wrong types, out-of-range values and illegal
combinations are all reported at once, each with the file, the key path, the value
and what is allowed. After loading, no code reads raw dicts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedzo.configs import read_yaml, validate
from fedzo.errors import ConfigError, ScenarioError
from fedzo.federation.config import FederatedRunConfig


def _known_profiles() -> dict[str, Any]:
    from fedzo.devices.profiles import load_profiles

    return load_profiles()


class DeviceGroup(BaseModel):
    """``count`` clients running on device profile ``profile`` (a name in clients/)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


class FleetConfig(BaseModel):
    """Which devices the clients run on, and what happens to those that cannot train."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
        "flops", description="simulated local compute: flops (FLOPs of the model at batch x seq over the "
        "profile's sustained rate: deterministic) or measured (host seconds x the profile's speed_ratio; "
        "deadline, over-commit and availability decisions then depend on host timing and runs no longer "
        "reproduce exactly)")

    @field_validator("default_profile")
    @classmethod
    def _known_default(cls, v: str) -> str:
        return DeviceGroup._known(v)

    def profiles_per_client(self, num_clients: int) -> list[str]:
        """Profile name of each client id, in order."""
        if not self.devices:
            return [self.default_profile] * num_clients
        out: list[str] = []
        for g in self.devices:
            out += [g.profile] * g.count
        return out


class Scenario(FederatedRunConfig):
    """A complete experiment: a federated run plus the fleet it runs on."""

    fleet: FleetConfig = Field(default_factory=FleetConfig, description="devices of the clients")
    out: str | None = Field(None, description="run directory (default: runs/<name>)")

    @model_validator(mode="after")
    def _fleet_matches(self) -> Scenario:
        n = self.federation.num_clients
        if self.fleet.devices:
            total = sum(g.count for g in self.fleet.devices)
            if total != n:
                raise ValueError(f"fleet.devices counts add up to {total} but federation.num_clients is {n}; "
                                 "make them equal")
        if self.federation.generator == "torch":
            profiles = _known_profiles()
            names = sorted(set(self.fleet.profiles_per_client(n)))
            kinds = {profiles[p].accelerator for p in names if p in profiles}
            if len(kinds) > 1:
                cuda = [p for p in names if profiles[p].accelerator == "cuda"]
                raise ValueError(f"federation.generator: 'torch' with a fleet mixing cpu and cuda devices "
                                 f"({', '.join(cuda)} on cuda): the torch generator draws different directions "
                                 "on CPU and CUDA; use generator: portable")
        return self

    @property
    def out_dir(self) -> Path:
        """Where the run is written."""
        return Path(self.out) if self.out else Path("runs") / self.name


def load_scenario(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file; ``name`` defaults to the file's stem."""
    p = Path(path)
    data = read_yaml(p)
    data.setdefault("name", p.stem)
    if overrides:
        data.update(overrides)
    return validate(Scenario, data, str(p), error=ScenarioError)


# --------------------------------------------------------------------------- reference
def _type_name(ann: Any) -> str:
    import typing

    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(ann))
    if origin is list:
        (arg,) = typing.get_args(ann)
        return f"list of {_type_name(arg)}"
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann))


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    import typing

    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        nested = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "see below" if nested else "[]"
        else:
            default = f"`{field.default!r}`" if field.default is not None else "`null`"
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        typ = _type_name(ann).replace("|", "\\|")
        rows.append(f"| `{key}` | {typ} | {default} | {desc} |")
        is_list = typing.get_origin(ann) is list
        for sub in [] if is_list else nested:
            rows += _rows(sub, f"{key}.")
        if is_list:
            for sub in typing.get_args(ann):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    rows += _rows(sub, f"{key}[].")
    return rows


def scenario_reference() -> str:
    """Markdown reference of every scenario key, generated from the schema."""
    head = [
        "# Scenario reference",
        "",
        "Generated from the schema (`fedzo/scenario.py`) by `fedzo validate --reference`; a test",
        "checks that this file is current. Every key is optional unless marked required.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + _rows(Scenario, "")) + "\n"
