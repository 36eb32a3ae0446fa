"""Pooling calibrations of one host measured at different times (``fedzo calibrate --merge``).

A shared host's speed drifts: on the reference host the same client-round measured 1.13-2.26x
apart on one day (``analysis/results/clock/repeatability``). One calibration is a snapshot of
that drift. Pooling several, measured hours or days apart, prices the host's typical speed:
every grid point keeps the median of its seconds over the files that measured it, every
regeneration price and optimizer update price likewise, and each group is fitted again to the pooled points. A group's
``measured`` lists the times of every calibration pooled into it.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from fedzo.calibration.model import Calibration, Group, Host, Point, fit_group
from fedzo.errors import ConfigError

HOST_FIELDS = ("cpu", "cores", "threads", "torch", "cpu_capability")


def _host(cals: Sequence[tuple[str, Calibration]]) -> Host:
    """The one host of all files (its benchmark scores pooled); a ConfigError names a file that differs."""
    first_name, first = cals[0]
    for name, cal in cals[1:]:
        for f in HOST_FIELDS:
            if getattr(cal.host, f) != getattr(first.host, f):
                raise ConfigError(f"{name}: host {f} {getattr(cal.host, f)!r}, but {first_name} has "
                                  f"{getattr(first.host, f)!r}; --merge pools calibrations of one host only")
    keys = {k for _, c in cals for k in c.host.benchmarks}
    scores = {k: statistics.median(c.host.benchmarks[k] for _, c in cals if k in c.host.benchmarks) for k in keys}
    return first.host.model_copy(update={"benchmarks": dict(sorted(scores.items()))})


def _points(label: str, found: Sequence[tuple[str, Group]]) -> list[Point]:
    """The union of the groups' grid points, each with the median of its measured seconds."""
    by_shape: dict[tuple[int, int], list[tuple[str, Point]]] = {}
    for name, g in found:
        for p in g.points:
            by_shape.setdefault((p.rows, p.width), []).append((name, p))
    out = []
    for (rows, width), measured in sorted(by_shape.items()):
        (name0, p0), *rest = measured
        for name, p in rest:
            if (p.flops, p.regen_elements) != (p0.flops, p0.regen_elements):
                raise ConfigError(f"{name}: {label} at {rows} x {width} counts {p.flops:.4g} FLOPs and "
                                  f"{p.regen_elements:.4g} regenerated elements, {name0} {p0.flops:.4g} and "
                                  f"{p0.regen_elements:.4g}: measured under another work model; remeasure it "
                                  "with this fedzo before merging")
        out.append(p0.model_copy(update={"seconds": statistics.median(p.seconds for _, p in measured)}))
    return out


def merge(cals: Sequence[tuple[str, Calibration]]) -> Calibration:
    """One calibration pooling ``cals`` (file name, content), all of one host: see the module doc."""
    if len(cals) < 2:
        raise ConfigError(f"--merge needs at least two calibration files, got {len(cals)}")
    host = _host(cals)
    regen = statistics.median(c.regen_seconds_per_element for _, c in cals)
    keys = sorted({g.key for _, c in cals for g in c.groups})
    groups = []
    for key in keys:
        found = [(name, g) for name, c in cals for g in c.groups if g.key == key]
        g0 = found[0][1]
        regens = [g.regen_seconds_per_element for _, g in found if g.regen_seconds_per_element is not None]
        groups.append(fit_group(g0.model, g0.method, g0.peft, g0.checkpointing, _points(g0.label(), found), regen,
                                statistics.median(regens) if regens else None,
                                measured=[t for _, g in found for t in g.measured]))
    priced = [c.update_seconds_per_element for _, c in cals if c.update_seconds_per_element]
    updates = {k: statistics.median(u[k] for u in priced) for k in priced[0]} if priced else None
    return Calibration(host=host, regen_seconds_per_element=regen, groups=groups, update_seconds_per_element=updates,
                       merged_from=[name for name, _ in cals])
