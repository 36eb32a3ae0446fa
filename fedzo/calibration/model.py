"""A calibration: seconds of training steps on the reference host, measured, kept as data.

``fedzo calibrate`` times fedzo's own step (ZO or backprop; full, LoRA, prefix or prompt
tuning) over a grid of batch sizes and sequence lengths and fits, per (model, method,
tuning) group, ``seconds = overhead + seconds_per_gflop x GFLOPs + regen x elements``,
where the GFLOPs come from :func:`fedzo.devices.work.step_work` and ``regen`` (seconds
per regenerated direction element) is timed on the group's own trainable tensors (ZO
groups) or once per host on one large tensor (the price of catch-up replay otherwise). A run reads the file at
start and copies it into its run directory, so simulated time never depends on live
timing and a run reproduces bitwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedzo.devices.work import UPDATE_FLOPS_PER_ELEMENT, Optimizer, StepWork, Tuning
from fedzo.errors import ConfigError

FORMAT = 1
SHIPPED = "reference-host"  # the shipped calibration's name: never the place to measure into
GROUP_OPTIMIZER: Optimizer = "sgd"  # backprop groups are measured with plain SGD (lr 0)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Point(_Frozen):
    """One measured configuration: a step's shape, its modelled work and measured seconds."""

    rows: int
    width: int
    seconds: float = Field(gt=0)
    flops: float = Field(ge=0)
    regen_elements: float = Field(ge=0)


class Group(_Frozen):
    """The fit of one (model, method, tuning) group over its measured points."""

    model: str
    method: Literal["zo", "bp", "fg"] = Field(description="zo: ZO steps (finite differences); bp: backprop; "
                                              "fg: ZO steps by forward gradients (forward-mode tangents)")
    peft: Literal["full", "lora", "prefix", "prompt"]
    checkpointing: bool = False
    overhead_seconds: float
    seconds_per_gflop: float = Field(ge=0)
    regen_seconds_per_element: float | None = Field(
        None, gt=0, description="ZO: seconds per regenerated element, timed on this group's trainable tensors")
    points: list[Point]
    measured: list[str] = Field(default_factory=list, description="when the group's points were measured (UTC, "
                                "ISO 8601, the minute its measurement finished): one time per calibration, several "
                                "after --merge (each point then the median over them); empty in older files")

    @property
    def key(self) -> tuple[str, str, str, bool]:
        """(model, method, peft, checkpointing)."""
        return self.model, self.method, self.peft, self.checkpointing

    def label(self) -> str:
        """``model method peft[ +checkpointing]``."""
        return f"{self.model} {self.method} {self.peft}" + (" +checkpointing" if self.checkpointing else "")


class Host(_Frozen):
    """The reference machine the seconds were measured on."""

    description: str
    cpu: str
    cores: int
    threads: int
    torch: str
    cpu_capability: str | None = Field(None, description="the vector capability torch's CPU kernels dispatched to "
                                       "(AVX2, AVX512, ...): a calibration holds for that type; None in older files")
    benchmarks: dict[str, float] = Field(
        default_factory=dict, description="scores on the benchmarks device profiles cite (gemm-fp32, gemm-fp64: "
        "FLOP/s of square torch.mm, the best of a few sizes)")


class Calibration(_Frozen):
    """A calibration file's content."""

    format: Literal[1] = 1
    host: Host
    regen_seconds_per_element: float = Field(gt=0)
    groups: list[Group]
    update_seconds_per_element: dict[Optimizer, float] | None = Field(
        None, description="seconds per trained element of one backprop optimizer step (torch's SGD, SGD with "
        "momentum, Adam), timed on one large tensor: an update streams its buffers through memory, which a FLOP "
        "price misses (Adam's is about 14x SGD's); None in files made before it was measured")
    round_seconds_per_element: dict[Optimizer, float] | None = Field(
        None, description="seconds per trained element that a FedAvg (backprop) client-round adds once, beyond "
        "its steps: packing the reply's arrays, checking and loading the arriving ones, and the first step's "
        "allocation of the optimizer's state; None in files made before it was measured")
    merged_from: list[str] = Field(default_factory=list, description="the calibration files --merge pooled into "
                                   "this one, as named on its command line; empty for a measured file")

    def group(self, model: str, tuning: Tuning, source: str) -> Group:
        """The group for ``model`` trained by ``tuning``; a ConfigError names what is missing."""
        method = tuning.calibration_method
        key = (model, method, tuning.peft, tuning.checkpointing)
        for g in self.groups:
            if g.key == key:
                return g
        have = ", ".join(g.label() for g in self.groups) or "nothing"
        ckpt = " --checkpointing" if tuning.checkpointing else ""
        measure = f"fedzo calibrate --model {model} --method {method} --peft {tuning.peft}{ckpt}"
        if Path(source).name.startswith(SHIPPED) or Path(source).name == "calibration.json":
            how = (f"measure it into a calibration of your own: `cp {source} my.calibration.json && {measure} --out "
                   "my.calibration.json` (it adds the group to the copy), then set fleet.calibration: "
                   "my.calibration.json")
        else:
            how = f"measure it with `{measure} --out {source}` (it adds the group to the file)"
        raise ConfigError(
            f"{source}: no calibration for {model} {method} {tuning.peft}"
            f"{' +checkpointing' if tuning.checkpointing else ''} (it has: {have}); {how}; or remove "
            "fleet.calibration to price compute with FLOPs (labelled an estimate)")

    def step_seconds(self, group: Group, work: StepWork) -> float:
        """Seconds of one step of ``work`` on the reference host."""
        regen = group.regen_seconds_per_element or self.regen_seconds_per_element
        return (group.overhead_seconds + group.seconds_per_gflop * work.flops / 1e9 + regen * work.regen_elements
                + self.update_correction(group, work))

    def update_correction(self, group: Group, work: StepWork) -> float:
        """Seconds a backprop step's optimizer adds over the plain SGD its group was measured
        with: the measured per-element difference in place of the FLOP-modelled one (0 without
        measured update prices, as in older files, or for SGD and ZO steps)."""
        prices = self.update_seconds_per_element
        opt = work.optimizer
        if not prices or not work.update_elements or opt == GROUP_OPTIMIZER:
            return 0.0
        measured = (prices[opt] - prices[GROUP_OPTIMIZER]) * work.update_elements
        modelled = (group.seconds_per_gflop * work.update_elements / 1e9
                    * (UPDATE_FLOPS_PER_ELEMENT[opt] - UPDATE_FLOPS_PER_ELEMENT[GROUP_OPTIMIZER]))
        return measured - modelled

    def round_seconds(self, optimizer: Optimizer, elements: float) -> float:
        """Seconds a FedAvg client-round with ``optimizer`` over ``elements`` trained elements
        adds once, beyond its steps (0 where the file has no such price)."""
        prices = self.round_seconds_per_element
        return prices[optimizer] * elements if prices else 0.0

    def regen_seconds(self, elements: float) -> float:
        """Seconds to regenerate ``elements`` direction elements on the reference host."""
        return self.regen_seconds_per_element * elements

    def digest(self) -> str:
        """sha256 of the canonical JSON (names the calibration a run used)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, 2-space indent). Empty provenance fields are left out,
        so a file written before they existed keeps its content and its digest."""
        data = self.model_dump(mode="json")
        if not data["merged_from"]:
            del data["merged_from"]
        for key in ("update_seconds_per_element", "round_seconds_per_element"):
            if data[key] is None:
                del data[key]
        if data["host"]["cpu_capability"] is None:
            del data["host"]["cpu_capability"]
        for g in data["groups"]:
            if not g["measured"]:
                del g["measured"]
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


def fit_group(model: str, method: Literal["zo", "bp", "fg"], peft: Literal["full", "lora", "prefix", "prompt"],
              checkpointing: bool, points: list[Point], regen_seconds_per_element: float,
              group_regen: float | None = None, measured: Sequence[str] = ()) -> Group:
    """Least-squares ``seconds - regen = overhead + slope x GFLOPs`` over ``points``.

    ``regen`` is ``group_regen`` (timed on the group's own tensors) when given, else the
    host's ``regen_seconds_per_element``; ``measured`` lists when the points were timed. A negative overhead (timer noise on a steep slope)
    is clamped to zero and the slope refit through the origin, so a prediction never goes
    below the FLOP term.
    """
    regen_seconds_per_element = group_regen or regen_seconds_per_element
    if not points:
        raise ConfigError(f"calibration of {model} {method} {peft}: no measured points")
    xs = [p.flops / 1e9 for p in points]
    ys = [p.seconds - regen_seconds_per_element * p.regen_elements for p in points]
    n = len(points)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var > 0 else 0.0
    overhead = my - slope * mx
    if overhead < 0 or slope < 0:
        overhead = max(overhead, 0.0) if slope >= 0 else my
        slope = max(0.0, sum(x * y for x, y in zip(xs, ys, strict=True)) / max(sum(x * x for x in xs), 1e-30))
        overhead = 0.0 if slope > 0 else my
    return Group(model=model, method=method, peft=peft, checkpointing=checkpointing, overhead_seconds=overhead,
                 seconds_per_gflop=slope, regen_seconds_per_element=group_regen, points=points,
                 measured=sorted(set(measured)))


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a calibration file; errors name the file and what to do."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such calibration file; make one with `fedzo calibrate --out {p}`")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: not a calibration file (corrupted JSON: {exc}); make a new one with "
                          f"`fedzo calibrate --out {p}`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{p}: calibration format {found!r}; this fedzo reads format {FORMAT}; "
                          f"remake it with `fedzo calibrate --out {p}`")
    try:
        return Calibration.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        raise ConfigError(f"{p}: {where}: {err.get('msg')} ({len(exc.errors())} problem(s)); remake it with "
                          f"`fedzo calibrate --out {p}`") from None
