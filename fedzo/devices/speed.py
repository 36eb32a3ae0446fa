"""A device's speed relative to the reference host: the ratio the clock scales by, and its chain.

The clock prices a step on the reference host (the calibration) and multiplies by the
device's ratio: device seconds per reference-host second. The ratio is derived from the
profile's ``speed`` block (:class:`fedzo.devices.profiles.Speed`): a published benchmark
score of the device against the reference host's own score on that benchmark (measured by
``fedzo calibrate``, stored in the calibration file), or chained through another profile.
Anything else is an estimate, and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fedzo.devices.profiles import DeviceProfile
from fedzo.errors import ConfigError

if TYPE_CHECKING:
    from fedzo.calibration.model import Calibration

# Sustained fp32 rate of the 2-core x86 reference host: an estimate (2 cores x AVX2 FMA
# 32 FLOP/cycle x ~2.5 GHz = 160 GFLOP/s peak, ~25 % sustained in PyTorch), used only when
# neither a calibration nor a measured benchmark says better.
HOST_FLOPS_FP32 = 4.0e10


@dataclass(frozen=True)
class SpeedFigure:
    """Device seconds per reference-host second, how it was derived, and from what."""

    ratio: float
    basis: Literal["benchmark", "relative", "estimate"]
    chain: tuple[str, ...]


def _flops_estimate(p: DeviceProfile, dtype: str) -> SpeedFigure:
    rate = p.flops(dtype)
    if rate is None:
        raise ConfigError(f"device {p.name!r}: needs a speed block, speed_ratio or flops_fp32")
    return SpeedFigure(HOST_FLOPS_FP32 / rate, "estimate",
                       (f"{p.name}: {rate:.3g} FLOP/s (profile) against the host's assumed {HOST_FLOPS_FP32:.3g}",))


def _measured_speed(p: DeviceProfile, calibration: Calibration | None) -> bool:
    """Whether ``p``'s speed block can be used (an estimate, or a benchmark the calibration anchors)."""
    return p.speed is not None and (p.speed.basis == "estimate" or calibration is not None)


def precision_factor(p: DeviceProfile, dtype: str) -> tuple[float, str]:
    """Device seconds in ``dtype`` per device second in fp32, and where that comes from: the
    profile's fp32 rate over its ``dtype`` rate, or 1 (priced as fp32) when it lacks either."""
    rate = p.flops(dtype)  # validates dtype; falls back to the fp32 rate
    if dtype == "fp32":
        return 1.0, ""
    if rate is None or p.flops_fp32 is None or rate == p.flops_fp32:
        return 1.0, f"{p.name}: no {dtype} rate in the profile, {dtype} priced at its fp32 speed (an estimate)"
    return p.flops_fp32 / rate, (f"{p.name}: {dtype} at {rate:.3g} against fp32 at {p.flops_fp32:.3g} FLOP/s "
                                 "(profile rates: an estimate)")


def speed_of(p: DeviceProfile, catalog: Mapping[str, DeviceProfile], calibration: Calibration | None,
             dtype: str = "fp32") -> SpeedFigure:
    """The speed figure of profile ``p`` for training in ``dtype`` (``catalog`` resolves
    ``relative_to``). A benchmark chain compares fp32 speeds (the calibration times the host
    in fp32), so another dtype scales it by :func:`precision_factor` and is then an estimate;
    a profile known only by its FLOP/s uses its rate for ``dtype``."""
    if not _measured_speed(p, calibration) and p.speed_ratio is None:
        return _flops_estimate(p, dtype)
    fig = _fp32_speed(p, catalog, calibration)
    if dtype == "fp32":
        return fig
    factor, why = precision_factor(p, dtype)
    return SpeedFigure(fig.ratio * factor, "estimate", (*fig.chain, why))


def _fp32_speed(p: DeviceProfile, catalog: Mapping[str, DeviceProfile], calibration: Calibration | None,
                _seen: tuple[str, ...] = ()) -> SpeedFigure:
    s = p.speed
    if s is None or not _measured_speed(p, calibration):  # no measured reference to compare with
        if p.speed_ratio is not None:
            return SpeedFigure(p.speed_ratio, "estimate", (f"{p.name}: speed_ratio {p.speed_ratio} (an estimate)",))
        return _flops_estimate(p, "fp32")
    if s.basis == "estimate":
        assert s.ratio is not None
        return SpeedFigure(s.ratio, "estimate", (f"{p.name}: ratio {s.ratio} ({s.source})",))
    assert s.benchmark is not None and s.score is not None
    if s.basis == "benchmark":
        assert calibration is not None
        ref = calibration.host.benchmarks.get(s.benchmark)
        if ref is None:
            have = ", ".join(calibration.host.benchmarks) or "none"
            raise ConfigError(f"device {p.name!r}: its speed cites benchmark {s.benchmark!r}, which the "
                              f"calibration's host did not measure (it has: {have}); re-run `fedzo calibrate`")
        return SpeedFigure(ref / s.score, "benchmark", (
            f"{p.name}: {s.benchmark} {s.score:.4g} ({s.source})",
            f"reference host: {s.benchmark} {ref:.4g} (measured by fedzo calibrate)"))
    base = s.relative_to
    if base is None or base in _seen or base not in catalog:
        raise ConfigError(f"device {p.name!r}: speed.relative_to {base!r} is not a profile of the catalog "
                          "(or the chain loops)")
    other = _fp32_speed(catalog[base], catalog, calibration, (*_seen, p.name))
    assert s.other_score is not None
    return SpeedFigure(other.ratio * s.other_score / s.score, "relative", (
        f"{p.name}: {s.benchmark} {s.score:.4g} against {s.relative_to}'s {s.other_score:.4g} ({s.source})",
        *other.chain))
