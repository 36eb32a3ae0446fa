"""Budget checks: does a training configuration fit a device, and if not, what would?"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from transformers import PretrainedConfig

from fedzo.devices.memory import MemoryBreakdown, Mode, PeftMode, estimate_memory
from fedzo.devices.profiles import DeviceProfile
from fedzo.errors import MemoryBudgetExceeded
from fedzo.units import format_bytes


@dataclass(frozen=True)
class FitReport:
    """Outcome of :func:`check_fit`: the breakdown, the budget and computed alternatives."""

    device: str
    model: str
    mode: Mode
    batch: int
    seq: int
    peft: PeftMode
    breakdown: MemoryBreakdown
    budget: int
    alternatives: tuple[str, ...]  # configurations that fit, computed (empty when fits)

    @property
    def fits(self) -> bool:
        """Whether the predicted peak is within the device's budget."""
        return self.breakdown.total <= self.budget

    @property
    def needed(self) -> int:
        """Predicted peak bytes of the training process."""
        return self.breakdown.total

    def message(self) -> str:
        """One paragraph: device, model, bytes needed vs available, what would fit."""
        verdict = "fits" if self.fits else "does not fit"
        text = (
            f"{self.mode.upper()} training of {self.model} (batch {self.batch} x seq {self.seq}, "
            f"peft {self.peft}) {verdict} on {self.device}: needs "
            f"{format_bytes(self.needed)} ({self.needed} B, peak in {self.breakdown.peak_phase}), "
            f"{format_bytes(self.budget)} ({self.budget} B) available"
        )
        if not self.fits:
            if self.alternatives:
                text += ". What fits: " + "; ".join(self.alternatives)
            else:
                text += ". Nothing smaller fits either: weights alone need " + format_bytes(
                    self.breakdown.weights + self.breakdown.runtime_overhead
                )
        return text + "."


def _largest_fitting_batch(total_for_batch: Callable[[int], int], batch: int, budget: int) -> int | None:
    """Largest b < batch with total_for_batch(b) <= budget (totals grow with b), or None."""
    lo, hi, best = 1, batch - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if total_for_batch(mid) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def check_fit(
    profile: DeviceProfile,
    model_config: PretrainedConfig,
    mode: Mode,
    batch: int,
    seq: int,
    peft: PeftMode = "full",
    *,
    model_name: str | None = None,
    **memory_kwargs: Any,
) -> FitReport:
    """Estimate memory for the configuration on ``profile`` and compute what would fit.

    ``memory_kwargs`` go to :func:`fedzo.devices.memory.estimate_memory` (dtype, optimizer,
    logits, lora_rank, checkpoint_fraction, ...). The profile's ``runtime_overhead``, when
    set, replaces the host constant.
    """
    if profile.runtime_overhead is not None:
        memory_kwargs.setdefault("runtime_overhead", profile.runtime_overhead)
    name = model_name or getattr(model_config, "name_or_path", "") or model_config.model_type

    def total(m: Mode, b: int, p: PeftMode, **changed: Any) -> int:
        """Predicted peak bytes with mode, batch, peft (and any memory option) changed; ZO
        suggested instead of BP is ZO-SGD (no optimizer state), whatever BP's optimizer."""
        switch = {"optimizer": "sgd"} if m == "zo" and mode == "bp" else {}
        return estimate_memory(model_config, m, batch=b, seq=seq, peft=p,
                               **{**memory_kwargs, **switch, **changed}).total

    breakdown = estimate_memory(model_config, mode, batch=batch, seq=seq, peft=peft,
                                **memory_kwargs)
    budget = profile.memory_budget
    report = FitReport(profile.name, name, mode, batch, seq, peft, breakdown, budget, ())
    if report.fits:
        return report
    alts: list[str] = []
    b = _largest_fitting_batch(lambda x: total(mode, x, peft), batch, budget)
    if b is not None:
        alts.append(f"batch {b} ({format_bytes(total(mode, b, peft))})")
    if mode == "bp":
        if (t := total("zo", batch, peft)) <= budget:
            alts.append(f"ZO instead of BP at batch {batch} ({format_bytes(t)})")
        if peft == "full" and (t := total("bp", batch, "lora")) <= budget:
            alts.append(f"BP with LoRA at batch {batch} ({format_bytes(t)})")
        if memory_kwargs.get("checkpoint_fraction", 0.0) < 1.0:
            ckpt = "activation checkpointing (optimizer.checkpointing: true)"
            if (t := total("bp", batch, peft, checkpoint_fraction=1.0)) <= budget:
                alts.append(f"BP with {ckpt} at batch {batch} ({format_bytes(t)})")
            elif peft == "full" and (t := total("bp", batch, "lora", checkpoint_fraction=1.0)) <= budget:
                alts.append(f"BP with LoRA and {ckpt} at batch {batch} ({format_bytes(t)})")
    if not alts and mode == "bp":
        b = _largest_fitting_batch(lambda x: total("zo", x, peft), batch, budget)
        if b is not None:
            alts.append(f"ZO at batch {b} ({format_bytes(total('zo', b, peft))})")
    return replace(report, alternatives=tuple(alts))


def require_fit(
    profile: DeviceProfile,
    model_config: PretrainedConfig,
    mode: Mode,
    batch: int,
    seq: int,
    peft: PeftMode = "full",
    **kwargs: Any,
) -> FitReport:
    """Like :func:`check_fit` but raises MemoryBudgetExceeded when it does not fit."""
    report = check_fit(profile, model_config, mode, batch, seq, peft, **kwargs)
    if not report.fits:
        raise MemoryBudgetExceeded(report.message())
    return report
