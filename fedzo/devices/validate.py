"""Check the memory model against peaks of fedzo's own training step measured on this machine.

Each configuration runs in a fresh Python subprocess (``python -m fedzo.devices.validate
--worker JSON``) that:

1. imports fedzo, torch, transformers and peft and reads its resident set: ``rss_import``;
2. builds the objective as a run does (the embedded model, fedzo's PEFT wrapping and the
   task's classifier: prompt + verbalizer, the LM head only at the scored position), and
   runs one warm-up step;
3. resets the kernel's high-water mark (``/proc/self/clear_refs`` <- 5) and runs one more
   step of fedzo's own kind: ZO through :func:`fedzo.zo.zo_step` (portable generator,
   chunked in-place perturbations); BP through :class:`fedzo.zo.first_order.FOTrainer`
   (optimizer states exist from the warm-up step; activation checkpointing when asked);
4. reports ``VmHWM`` (peak resident set of the step);
5. runs one more step under :class:`fedzo.devices.tensor_peak.TensorPeak` (a dispatch
   mode that sees every tensor the step allocates and frees): the peak bytes of the step's
   own tensors (activations, logits, gradients, perturbation chunks, temporaries).

*Measured* = VmHWM - rss_import: the model-attributable peak (weights, activations,
optimizer, allocator slack), the median over ``repeats`` fresh processes (``fedzo memory
--validate`` runs 3), whose spread the table shows. *Predicted* = ``MemoryBreakdown.total - runtime_overhead``.
The process peak (VmHWM) against ``total`` is reported too. Linux only (reads /proc).

The tensor figures separate the two things the memory model predicts. The step's live
tensors (``MemoryBreakdown.largest_phase`` against the tracker's peak) do not depend on
the C library or the machine, so tests check them tightly. The resident set adds what the
allocator keeps: glibc's malloc holds freed blocks below its mmap threshold, which moves
the peak by tens of percent from one machine or allocation pattern to another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from fedzo.errors import FedzoError
from fedzo.units import format_bytes

if TYPE_CHECKING:
    from fedzo.devices.memory import MemoryBreakdown, Mode, Optimizer

__all__ = ["DEFAULT_CASES", "ValidationCase", "ValidationResult", "format_table", "measure", "predict", "run_case", "validate"]


@dataclass(frozen=True)
class ValidationCase:
    """One configuration to measure."""

    model: str
    mode: Mode
    batch: int
    seq: int
    peft: Literal["full", "lora", "prefix", "prompt"] = "full"
    optimizer: Optimizer = "sgd"
    checkpointing: bool = False
    task: str | None = None  # the task whose classifier is built (default: the model's calibration task)
    forward_grad: bool = False  # ZO by forward gradients instead of central differences
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"  # precision of the model (fp16: CUDA only)

    @property
    def label(self) -> str:
        """Short name of the case: model, batch x seq and what differs from the defaults."""
        parts = [self.model, f"{self.batch}x{self.seq}"]
        if self.peft != "full":
            parts.append(self.peft)
        if self.mode == "bp" or self.optimizer != "sgd":
            parts.append(self.optimizer)
        if self.checkpointing:
            parts.append("checkpointing")
        if self.forward_grad:
            parts.append("forward-grad")
        if self.dtype != "fp32":
            parts.append(self.dtype)
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
    tensors_predicted: int = 0  # MemoryBreakdown.largest_phase: the step's live tensors
    tensors_measured: int | None = None  # the tracker's peak of the step's tensors (None: not measurable)
    measured_runs: tuple[int, ...] = ()  # VmHWM - rss_import of each fresh process (``measured``: their median)

    @property
    def spread(self) -> float:
        """(largest - smallest) / median of the fresh processes' measurements (0 for one)."""
        return (max(self.measured_runs) - min(self.measured_runs)) / self.measured if self.measured_runs else 0.0

    @property
    def error(self) -> float:
        """Relative error of the prediction: (predicted - measured) / measured."""
        return (self.predicted - self.measured) / self.measured

    @property
    def tensors_error(self) -> float | None:
        """Relative error of the step's live tensors (None where they were not measured)."""
        if not self.tensors_measured:
            return None
        return (self.tensors_predicted - self.tensors_measured) / self.tensors_measured


# About 6-7 minutes on 2 idle CPU cores: the embedded SmolLM2-135M and MiniLM-L6 as fedzo trains them.
DEFAULT_CASES: tuple[ValidationCase, ...] = (
    ValidationCase("smollm2-135m", "zo", 16, 64),
    ValidationCase("smollm2-135m", "zo", 16, 64, dtype="bf16"),
    ValidationCase("smollm2-135m", "zo", 8, 64, peft="prompt"),
    ValidationCase("smollm2-135m", "zo", 8, 64, peft="prompt", forward_grad=True),
    ValidationCase("smollm2-135m", "zo", 8, 64, forward_grad=True),
    ValidationCase("minilm-l6", "zo", 32, 128),
    ValidationCase("minilm-l6", "zo", 32, 128, optimizer="adam"),
    ValidationCase("smollm2-135m", "bp", 4, 64, optimizer="adam"),
    ValidationCase("smollm2-135m", "bp", 4, 64, optimizer="adam", checkpointing=True),
    ValidationCase("smollm2-135m", "bp", 8, 64, peft="lora", optimizer="adam"),
    ValidationCase("smollm2-135m", "bp", 8, 64, peft="lora", optimizer="adam", dtype="bf16"),
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


def _worker(case: ValidationCase, tensors: bool = True) -> dict[str, Any]:
    """Run one case in this process and return the measurements (see module docstring);
    the tracked step only with ``tensors``."""
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from fedzo.calibration.measure import classifier, step_function, synthetic_batch
    from fedzo.devices.work import Tuning

    threads = min(2, os.cpu_count() or 1)
    torch.set_num_threads(threads)
    rss_import = _status_bytes("VmRSS")
    tuning = Tuning.of("fg" if case.forward_grad else case.mode, case.peft, optimizer=case.optimizer,
                       checkpointing=case.checkpointing)
    clf = classifier(case.model, tuning, threads, task=case.task, dtype=case.dtype)
    batch = synthetic_batch(clf, case.batch, case.seq)
    step = step_function(clf, tuning)
    step(batch)  # warm-up: kernels, allocator, optimizer states
    t0 = time.perf_counter()
    _reset_peak()
    step(batch)
    seconds = time.perf_counter() - t0
    hwm = _status_bytes("VmHWM")
    return {"rss_import": rss_import, "hwm": hwm, "seconds": seconds,
            "tensors": step_tensor_peak(step, batch) if tensors else None}


def step_tensor_peak(step: Any, batch: Any) -> int:
    """Peak bytes of the tensors one call of ``step(batch)`` allocates (see :mod:`fedzo.devices.tensor_peak`)."""
    from fedzo.devices.tensor_peak import TensorPeak

    with TensorPeak() as tracker:
        step(batch)
    return tracker.peak


def measure(case: ValidationCase, timeout: float = 300.0, *, tensors: bool = True) -> dict[str, Any]:
    """``case``'s step in a fresh subprocess: ``rss_import``, ``hwm`` (peak RSS), ``seconds``
    and, with ``tensors``, the step's live-tensor peak (one more step, under the tracker)."""
    env = dict(os.environ, OMP_NUM_THREADS="2", HF_HUB_OFFLINE="1",
               TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fedzo.devices.validate", "--worker", json.dumps(asdict(case)),
             *([] if tensors else ["--no-tensors"])],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )
    except subprocess.TimeoutExpired:
        raise FedzoError(f"measuring {case.label} ({case.mode}) took longer than {timeout:.0f} s; "
                         "run on an idle machine or pass a larger timeout") from None
    if proc.returncode != 0:
        raise FedzoError(f"measuring {case.label} ({case.mode}) failed:\n{proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def predict(case: ValidationCase, runtime_overhead: int | None = None, *, allocator: bool = True) -> MemoryBreakdown:
    """The memory model's breakdown for ``case`` as fedzo runs it (last-position logits;
    prompt tuning priced as prefix); ``runtime_overhead`` None: the model's default;
    ``allocator`` False: without the allocator's slack and reserve (live tensors only)."""
    from fedzo.devices.architectures import model_config
    from fedzo.devices.memory import estimate_memory

    terms: dict[str, Any] = {} if allocator else {"allocator_slack": 0.0, "allocator_reserve": 0}
    return estimate_memory(
        model_config(case.model), case.mode,
        batch=case.batch, seq=case.seq, peft="prefix" if case.peft == "prompt" else case.peft,
        optimizer=case.optimizer, logits="last", runtime_overhead=runtime_overhead,
        checkpoint_fraction=1.0 if case.checkpointing else 0.0, forward_grad=case.forward_grad, dtype=case.dtype,
        **terms,
    )


def run_case(case: ValidationCase, timeout: float = 300.0, repeats: int = 1) -> ValidationResult:
    """Measure ``case`` in ``repeats`` fresh subprocesses and compare their median with the
    memory model (the live tensors are tracked in the first only: they do not vary).

    One process is not enough to check a model to 10 %: the resident peak of the same step
    moves from process to process with what glibc kept from loading and warming up
    (SmolLM2-135M ZO 16 x 64 bf16: 366, 407 and 412 MB above the imports on one day)."""
    if repeats < 1:
        raise FedzoError(f"repeats (--repeats): must be >= 1 (got {repeats})")
    runs = [measure(case, timeout, tensors=k == 0) for k in range(repeats)]
    first, growth = runs[0], [m["hwm"] - m["rss_import"] for m in runs]
    mid = sorted(range(repeats), key=lambda k: growth[k])[(repeats - 1) // 2]  # the median run (lower middle)
    m = runs[mid]
    breakdown = predict(case, runtime_overhead=m["rss_import"])
    return ValidationResult(
        case=case, predicted=breakdown.total - breakdown.runtime_overhead,
        measured=growth[mid], process_predicted=breakdown.total,
        process_measured=m["hwm"], rss_import=m["rss_import"], seconds=statistics.median(r["seconds"] for r in runs),
        tensors_predicted=breakdown.largest_phase, tensors_measured=first.get("tensors"),
        measured_runs=tuple(growth),
    )


def validate(cases: tuple[ValidationCase, ...] = DEFAULT_CASES, repeats: int = 1) -> list[ValidationResult]:
    """Measure every case, in ``repeats`` fresh subprocesses each."""
    return [run_case(c, repeats=repeats) for c in cases]


def format_table(results: list[ValidationResult]) -> str:
    """Plain-text table: config, mode, predicted, measured, error %."""
    rows = [("config", "mode", "predicted", "measured", "error", "spread", "process pred/meas",
             "step tensors pred/meas")]
    for r in results:
        tensors = "n/a" if r.tensors_measured is None else format_bytes(r.tensors_measured)
        rows.append((
            r.case.label, r.case.mode, format_bytes(r.predicted), format_bytes(r.measured),
            f"{100 * r.error:+.1f} %", f"{100 * r.spread:.0f} % of {max(1, len(r.measured_runs))}",
            f"{format_bytes(r.process_predicted)} / {format_bytes(r.process_measured)}",
            f"{format_bytes(r.tensors_predicted)} / {tensors}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_json(results: list[ValidationResult]) -> list[dict[str, Any]]:
    """JSON-ready list of results."""
    return [
        {**asdict(r), "label": r.case.label, "error": r.error, "spread": r.spread, "tensors_error": r.tensors_error}
        for r in results
    ]


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedzo.devices.validate")
    parser.add_argument("--worker", help="(internal) run one case given as JSON")
    parser.add_argument("--no-tensors", action="store_true", help="(internal) skip the tracked step")
    args = parser.parse_args(argv)
    if args.worker:
        case = ValidationCase(**json.loads(args.worker))
        print(json.dumps(_worker(case, tensors=not args.no_tensors)))
        return 0
    try:
        print(format_table(validate()))
    except FedzoError as exc:
        print(f"python -m fedzo.devices.validate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
