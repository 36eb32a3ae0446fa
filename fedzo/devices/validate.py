"""Check the memory model against peaks measured on this machine (CPU).

Each configuration runs in a fresh Python subprocess (``python -m fedzo.devices.validate
--worker JSON``) that:

1. imports torch, transformers (and peft) and reads its resident set: ``rss_import``;
2. builds a random-weight model from a config (no download), runs one tiny warm-up forward;
3. ZO: resets the kernel's high-water mark (``/proc/self/clear_refs`` <- 5) and runs one
   fused MeZO step: forward, in-place chunked perturbations (+eps, -2eps, restore/update),
   second forward; no gradients, ``use_cache=False``;
   BP: runs one full step (forward, backward, optimizer step), sets gradients to None,
   resets the high-water mark and runs a second, steady-state step (optimizer states exist);
4. reports ``VmHWM`` (peak resident set of the step).

*Measured* = VmHWM - rss_import: the model-attributable peak (weights, activations,
optimizer, allocator slack). *Predicted* = ``MemoryBreakdown.total - runtime_overhead``.
The process peak (VmHWM) against ``total`` is reported too. Linux only (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fedzo.errors import FedzoError
from fedzo.units import format_bytes

if TYPE_CHECKING:
    import torch
    from torch import nn

    from fedzo.devices.memory import LogitsMode, Mode, Optimizer, PeftMode

__all__ = ["DEFAULT_CASES", "ValidationCase", "ValidationResult", "format_table", "run_case", "validate"]


@dataclass(frozen=True)
class ValidationCase:
    """One configuration to measure."""

    model: str
    mode: Mode
    batch: int
    seq: int
    peft: PeftMode = "full"
    optimizer: Optimizer = "sgd"
    logits: LogitsMode | None = None  # None: the mode's default (zo: last, bp: full)
    chunk_elements: int = 1 << 20

    @property
    def label(self) -> str:
        """Short name of the case: model, batch x seq and what differs from the defaults."""
        parts = [self.model, f"{self.batch}x{self.seq}"]
        if self.peft != "full":
            parts.append(self.peft)
        if self.mode == "bp":
            parts.append(self.optimizer)
        if self.logits:
            parts.append(f"logits={self.logits}")
        return " ".join(parts)


@dataclass(frozen=True)
class ValidationResult:
    """Predicted vs measured bytes for one case."""

    case: ValidationCase
    predicted: int  # model-attributable bytes (total - runtime overhead)
    measured: int  # VmHWM - rss_import
    process_predicted: int
    process_measured: int
    rss_import: int
    seconds: float

    @property
    def error(self) -> float:
        """Relative error of the prediction: (predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured


# About 2-3 minutes on 2 idle CPU cores. Sizes are realistic: SmolLM2-135M and MiniLM-L6 shapes.
DEFAULT_CASES: tuple[ValidationCase, ...] = (
    ValidationCase("smollm2-135m", "zo", 16, 64),
    ValidationCase("smollm2-135m", "zo", 4, 128, logits="full"),
    ValidationCase("minilm-l6", "zo", 32, 128),
    ValidationCase("smollm2-135m", "bp", 4, 64, optimizer="adam"),
    ValidationCase("smollm2-135m", "bp", 2, 128, peft="lora", optimizer="adam", logits="last"),
    ValidationCase("minilm-l6", "bp", 16, 128, optimizer="adam"),
    ValidationCase("minilm-l6", "bp", 8, 128, optimizer="sgd"),
)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _loss_fn(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, vocab: int, decoder: bool,
             logits_mode: str) -> Callable[[], torch.Tensor]:
    """The training loss of the case: LM cross-entropy (decoder) or classification (encoder)."""
    import torch

    def loss_fn() -> torch.Tensor:
        if decoder:
            keep = 0 if logits_mode == "full" else 1
            out = model(input_ids=ids, use_cache=False, logits_to_keep=keep)
            logits = out.logits.float()
            if logits_mode == "full":  # shift the labels, not the logits (no copy)
                shifted = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
                return torch.nn.functional.cross_entropy(
                    logits.reshape(-1, vocab), shifted.reshape(-1), ignore_index=-100
                )
            return torch.nn.functional.cross_entropy(logits[:, -1], ids[:, -1])
        out = model(input_ids=ids)
        return torch.nn.functional.cross_entropy(out.logits, labels)

    return loss_fn


def _zo_step(model: nn.Module, params: list[nn.Parameter], loss_fn: Callable[[], torch.Tensor],
             chunk_elements: int) -> None:
    """One fused MeZO step, in-place chunked perturbations, peak mark reset first."""
    import torch

    def perturb(scale: float, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        for p in params:
            flat = p.data.view(-1)
            for chunk in flat.split(chunk_elements):
                z = torch.randn(chunk.shape, generator=g)
                chunk.add_(z, alpha=scale)

    model.eval()
    _reset_peak()
    eps, lr = 1e-3, 1e-6
    with torch.inference_mode():
        perturb(eps, 7)
        lp = float(loss_fn())
        perturb(-2 * eps, 7)
        lm = float(loss_fn())
        g = (lp - lm) / (2 * eps)
        perturb(eps - lr * g, 7)  # fused restore + update


def _bp_steps(model: nn.Module, params: list[nn.Parameter], loss_fn: Callable[[], torch.Tensor],
              optimizer: str) -> None:
    """Two backprop steps; the peak mark is reset before the second (steady state)."""
    import torch

    model.train()
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=1e-5) if optimizer == "adam"
        else torch.optim.SGD(params, lr=1e-5)
    )
    for step in range(2):
        if step == 1:
            _reset_peak()
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _worker(case: ValidationCase) -> dict[str, Any]:
    """Run one case in this process and return the measurements (see module docstring)."""
    import torch
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from fedzo.devices.architectures import model_config

    if case.peft == "lora":
        import peft  # noqa: F401
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rss_import = _status_bytes("VmRSS")
    torch.manual_seed(0)
    config = model_config(case.model)
    decoder = config.model_type == "llama"
    auto = AutoModelForCausalLM if decoder else AutoModelForSequenceClassification
    model: nn.Module = auto.from_config(config)
    if case.peft == "lora":
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "v_proj"] if decoder else ["query", "value"]
        lcfg = LoraConfig(r=8, target_modules=targets,
                          modules_to_save=None if decoder else ["classifier"])
        model = get_peft_model(model, lcfg)
    gen = torch.Generator().manual_seed(1)
    vocab = config.vocab_size
    ids = torch.randint(0, vocab, (case.batch, case.seq), generator=gen)
    labels = torch.randint(0, 2, (case.batch,), generator=gen)
    logits_mode = case.logits or ("last" if case.mode == "zo" else "full")
    loss_fn = _loss_fn(model, ids, labels, vocab, decoder, logits_mode)
    with torch.inference_mode():
        model(input_ids=ids[:1, :8])
    params = [p for _, p in sorted(model.named_parameters()) if p.requires_grad]

    t0 = time.perf_counter()
    if case.mode == "zo":
        _zo_step(model, params, loss_fn, case.chunk_elements)
    else:
        _bp_steps(model, params, loss_fn, case.optimizer)
    return {"rss_import": rss_import, "hwm": _status_bytes("VmHWM"),
            "seconds": time.perf_counter() - t0}


def run_case(case: ValidationCase, timeout: float = 300.0) -> ValidationResult:
    """Measure ``case`` in a fresh subprocess and compare with the memory model."""
    from fedzo.devices.architectures import model_config
    from fedzo.devices.memory import estimate_memory

    env = dict(os.environ, OMP_NUM_THREADS="2", HF_HUB_OFFLINE="1",
               TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fedzo.devices.validate", "--worker", json.dumps(asdict(case))],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        raise FedzoError(f"measuring {case.label} ({case.mode}) took longer than {timeout:.0f} s; "
                         "run on an idle machine or pass a larger timeout") from None
    if proc.returncode != 0:
        raise FedzoError(f"measuring {case.label} ({case.mode}) failed:\n{proc.stderr[-2000:]}")
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    breakdown = estimate_memory(
        model_config(case.model), case.mode,
        batch=case.batch, seq=case.seq, peft=case.peft,
        optimizer=case.optimizer, logits=case.logits,
        chunk_elements=case.chunk_elements, runtime_overhead=m["rss_import"],
    )
    return ValidationResult(
        case=case, predicted=breakdown.total - breakdown.runtime_overhead,
        measured=m["hwm"] - m["rss_import"], process_predicted=breakdown.total,
        process_measured=m["hwm"], rss_import=m["rss_import"], seconds=m["seconds"],
    )


def validate(cases: tuple[ValidationCase, ...] = DEFAULT_CASES) -> list[ValidationResult]:
    """Measure every case, one fresh subprocess each."""
    return [run_case(c) for c in cases]


def format_table(results: list[ValidationResult]) -> str:
    """Plain-text table: config, mode, predicted, measured, error %."""
    rows = [("config", "mode", "predicted", "measured", "error", "process pred/meas")]
    for r in results:
        rows.append((
            r.case.label, r.case.mode, format_bytes(r.predicted), format_bytes(r.measured),
            f"{100 * r.error:+.1f} %",
            f"{format_bytes(r.process_predicted)} / {format_bytes(r.process_measured)}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_json(results: list[ValidationResult]) -> list[dict[str, Any]]:
    """JSON-ready list of results."""
    return [
        {**asdict(r), "label": r.case.label, "error": r.error} for r in results
    ]


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedzo.devices.validate")
    parser.add_argument("--worker", help="(internal) run one case given as JSON")
    args = parser.parse_args(argv)
    if args.worker:
        case = ValidationCase(**json.loads(args.worker))
        print(json.dumps(_worker(case)))
        return 0
    try:
        print(format_table(validate()))
    except FedzoError as exc:
        print(f"python -m fedzo.devices.validate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
