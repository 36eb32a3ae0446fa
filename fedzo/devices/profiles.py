"""Device profiles: the YAML catalog in ``clients/`` as validated, frozen objects.

A profile says how much memory training may use, how fast the device computes (sustained
FLOP/s per dtype and/or a time multiplier against the measured reference host), its link
(bit/s, latency) and when it is online. Figures carry their source as YAML comments in the
catalog files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from fedzo.devices.availability import AlwaysAvailable, Availability, TraceAvailability, load_trace
from fedzo.errors import ConfigError
from fedzo.units import parse_bitrate, parse_bytes

CLIENTS_DIR_ENV = "FEDZO_CLIENTS_DIR"

__all__ = ["DeviceProfile", "Speed", "default_clients_dir", "get_profile", "load_profile", "load_profiles"]


class Speed(BaseModel):
    """How fast a device trains relative to the reference host, and where that comes from.

    ``benchmark``: the device's published ``score`` on ``benchmark`` (higher is faster),
    divided into the reference host's score on the same benchmark, measured by
    ``fedzo calibrate`` (in the calibration file). ``relative``: the same benchmark
    published for this device and for another profile (``relative_to``, ``other_score``),
    chained to that profile's speed. ``estimate``: a ``ratio`` nobody measured.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    basis: Literal["benchmark", "relative", "estimate"]
    benchmark: str | None = Field(None, description="gemm-fp32, gemm-fp64 (HPL), geekbench6-multi, ...")
    score: float | None = Field(None, gt=0, description="the device's score on the benchmark")
    relative_to: str | None = Field(None, description="basis relative: the profile the score is compared to")
    other_score: float | None = Field(None, gt=0, description="basis relative: that profile's score")
    ratio: float | None = Field(None, gt=0, description="basis estimate: device seconds per reference-host second")
    source: str = Field(min_length=1, description="where the figures come from (address, what was measured)")

    @model_validator(mode="after")
    def _complete(self) -> Speed:
        need = {"benchmark": ("benchmark", "score"), "relative": ("benchmark", "score", "relative_to", "other_score"),
                "estimate": ("ratio",)}[self.basis]
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"speed with basis {self.basis!r} needs {', '.join(missing)}")
        return self


class DeviceProfile(BaseModel):
    """One kind of device. Sizes in bytes, rates in bit/s, FLOP/s, seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    memory_budget: int = Field(gt=0, description="bytes available to the training process")
    flops_fp32: float | None = Field(default=None, gt=0, description="sustained fp32 FLOP/s")
    flops_fp16: float | None = Field(default=None, gt=0, description="sustained fp16 FLOP/s")
    flops_bf16: float | None = Field(default=None, gt=0, description="sustained bf16 FLOP/s")
    speed_ratio: float | None = Field(
        default=None, gt=0, description="device seconds per reference-host second (2 = 2x slower)"
    )
    speed: Speed | None = Field(default=None, description="the device's speed relative to the reference host, "
                                "with its sources (see Speed)")
    uplink_bps: float = Field(gt=0)
    downlink_bps: float = Field(gt=0)
    latency_s: float = Field(ge=0)
    availability: Availability = Field(default_factory=AlwaysAvailable)
    runtime_overhead: int | None = Field(
        default=None, ge=0, description="framework bytes (overrides the measured host constant)"
    )
    accelerator: Literal["cpu", "cuda"] = Field(
        default="cpu", description="where training computes: cpu, or a CUDA GPU (Jetson, datacenter)"
    )

    @field_validator("memory_budget", "runtime_overhead", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> Any:
        return None if v is None else parse_bytes(v)

    @field_validator("uplink_bps", "downlink_bps", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        return parse_bitrate(v)

    @model_validator(mode="after")
    def _has_speed(self) -> DeviceProfile:
        if self.speed_ratio is None and self.speed is None and all(
            f is None for f in (self.flops_fp32, self.flops_fp16, self.flops_bf16)
        ):
            raise ValueError("give at least one of flops_fp32, flops_fp16, flops_bf16, speed_ratio, speed")
        return self

    def flops(self, dtype: str) -> float | None:
        """Sustained FLOP/s for ``dtype`` (fp32/fp16/bf16), falling back to fp32."""
        by_dtype = {"fp32": self.flops_fp32, "fp16": self.flops_fp16, "bf16": self.flops_bf16}
        if dtype not in by_dtype:
            raise ConfigError(f"dtype: {dtype!r} is not one of {sorted(by_dtype)}")
        return by_dtype[dtype] or self.flops_fp32


def default_clients_dir() -> Path:
    """``$FEDZO_CLIENTS_DIR`` if set, else ``clients/`` next to the installed package."""
    env = os.environ.get(CLIENTS_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "clients"


_AVAILABILITY_KEYS = "kind (always, bernoulli, trace), p, dropout, file"


def _format_error(path: Path, err: ErrorDetails, raw: dict[str, Any]) -> str:
    """One line per pydantic error: file, YAML key path, value as written, what is allowed."""
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    # Drop pydantic's union tag from the path ("availability.bernoulli.p" -> "availability.p").
    if len(parts) >= 2 and parts[0] == "availability" and parts[1] in {
        "always", "bernoulli", "trace"
    }:
        parts.pop(1)
    loc = ".".join(parts)
    value: Any = raw
    for part in parts:
        value = value.get(part) if isinstance(value, dict) else None
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg.replace("Input should be ", "must be ").replace("Field required", "is required")
    if err["type"] == "extra_forbidden":
        nested = parts[0] == "availability"
        allowed = _AVAILABILITY_KEYS if nested else ", ".join(DeviceProfile.model_fields)
        return f"{path}: {loc}: unknown key (allowed: {allowed})"
    if not loc:
        return f"{path}: {msg}"
    shown = "" if value is None and err["type"] == "missing" else f" {value!r}"
    return f"{path}: {loc}:{shown} {msg}"


def load_profile(path: Path) -> DeviceProfile:
    """Load and validate one profile file; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read profile: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile must be a YAML mapping of keys to values")
    raw.setdefault("name", path.stem)
    try:
        profile = DeviceProfile.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(path, e, raw) for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None
    if isinstance(profile.availability, TraceAvailability):
        trace_path = profile.availability.file
        if not trace_path.is_absolute():
            trace_path = path.parent / trace_path
        try:
            trace = load_trace(trace_path)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ConfigError(f"{path}: availability.file: {trace_path}: {problems}") from None
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: availability.file: {trace_path}: {exc}") from None
        avail = profile.availability.model_copy(update={"file": trace_path, "trace": trace})
        profile = profile.model_copy(update={"availability": avail})
    return profile


def _load_dir(directory: Path) -> dict[str, DeviceProfile]:
    if not directory.is_dir():
        raise ConfigError(
            f"{directory}: device catalog not found (set ${CLIENTS_DIR_ENV} or pass dir=)"
        )
    profiles: dict[str, DeviceProfile] = {}
    errors: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            profile = load_profile(path)
        except ConfigError as exc:
            errors.append(str(exc))
            continue
        if profile.name in profiles:
            errors.append(f"{path}: name: {profile.name!r} is already defined by another file")
        profiles[profile.name] = profile
    if errors:
        raise ConfigError("\n".join(errors))
    return profiles


def load_profiles(dir: Path | str | None = None) -> dict[str, DeviceProfile]:
    """All profiles of a catalog directory (default :func:`default_clients_dir`), by name."""
    directory = Path(dir) if dir is not None else default_clients_dir()
    return _load_dir(directory.resolve())


def get_profile(name: str, dir: Path | str | None = None) -> DeviceProfile:
    """The profile called ``name``; ConfigError lists the known names otherwise."""
    profiles = load_profiles(dir)
    if name not in profiles:
        known = ", ".join(sorted(profiles)) or "(none)"
        raise ConfigError(f"device profile {name!r} is unknown (known: {known})")
    return profiles[name]
