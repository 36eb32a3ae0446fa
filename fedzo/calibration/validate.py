"""Validating the clock: its host-seconds per client-round against a fresh process's measurement.

Each case is a client-round: ``steps`` training steps of fedzo's own step on real batches
of the task (rows = the batch size, width = the batch's longest sentence, truncated to
``max_length``), timed in a fresh Python process after two warm-up steps, in ``repeats``
fresh processes: the prediction is compared with their median, and the spread of the
measurements themselves (the host's own noise) is reported next to it. The clock's
prediction for the same batches comes from the calibration
(:meth:`fedzo.calibration.model.Calibration.step_seconds`). Cases marked ``off_grid`` use
a batch size or sequence length the calibration grid did not measure, so the check is
not circular. Run as ``python -m fedzo.calibration.validate '<json case>'`` for one case.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedzo.calibration.model import Calibration
from fedzo.devices.work import Optimizer, Tuning
from fedzo.errors import FedzoError


@dataclass(frozen=True)
class Case:
    """One client-round configuration to check."""

    model: str
    method: Literal["zo", "bp", "fg"]
    peft: Literal["full", "lora", "prefix", "prompt"]
    batch: int
    max_length: int
    steps: int = 8
    off_grid: bool = False
    checkpointing: bool = False
    optimizer: Optimizer = "sgd"  # backprop: the torch optimizer the steps take

    @property
    def tuning(self) -> Tuning:
        """The tuning this case trains with."""
        return Tuning.of(self.method, self.peft, checkpointing=self.checkpointing, optimizer=self.optimizer)

    def label(self) -> str:
        """``model method peft[ +ckpt][ optimizer] batch x max_length``."""
        ckpt = " +ckpt" if self.checkpointing else ""
        opt = f" {self.optimizer}" if self.method == "bp" and self.optimizer != "sgd" else ""
        return f"{self.model} {self.method} {self.peft}{ckpt}{opt} batch {self.batch} len<={self.max_length}"


def run_case(case: Case, threads: int) -> dict[str, Any]:
    """In this process: time ``case.steps`` steps on real batches; returns seconds and shapes."""
    from fedzo.calibration.measure import arch_of, classifier, step_function
    from fedzo.tasks.registry import load_task
    from fedzo.zo import ParamSet

    clf = classifier(case.model, case.tuning, threads)
    clf.max_length = case.max_length
    task = load_task("synthetic-sentiment" if case.model.startswith("tiny") else "rotten-tomatoes", seed=0)
    rng = random.Random(17)
    batches = [next(iter(clf.batches(rng.sample(task.train, case.batch), case.batch))) for _ in range(case.steps + 2)]
    step = step_function(clf, case.tuning)
    for b in batches[:2]:  # warm-up on other batches: allocator, kernels, thread pool
        step(b)
    t0 = time.perf_counter()
    for b in batches[2:]:
        step(b)
    seconds = time.perf_counter() - t0
    shapes = [(int(b.input_ids.shape[0]), int(b.input_ids.shape[1])) for b in batches[2:]]
    d = arch_of(clf)
    return {"seconds": seconds, "shapes": shapes, "trainable": ParamSet.from_module(clf).numel,
            "arch": asdict(d)}


def predicted_seconds(cal: Calibration, case: Case, result: dict[str, Any], source: str) -> float:
    """The clock's host-seconds for the measured batches (:func:`fedzo.devices.clock.host_steps_seconds`,
    the price every run's clock scales by a device's speed)."""
    from fedzo.devices.clock import host_steps_seconds
    from fedzo.devices.dims import ArchDims

    return host_steps_seconds(cal, cal.group(case.model, case.tuning, source), ArchDims(**result["arch"]),
                              case.tuning, result["trainable"], [(int(r), int(w)) for r, w in result["shapes"]])


def measure_in_fresh_process(case: Case, threads: int, timeout: float = 1800) -> dict[str, Any]:
    """:func:`run_case` in a new Python process (nothing cached, nothing warm)."""
    arg = json.dumps({"case": asdict(case), "threads": threads})
    proc = subprocess.run([sys.executable, "-m", "fedzo.calibration.validate", arg], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise FedzoError(f"validation case {case.label()} failed: {tail}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def validate(cal: Calibration, cases: list[Case], threads: int, source: str, repeats: int = 3) -> dict[str, Any]:
    """Every case predicted and measured ``repeats`` times; ``max_relative_error`` over them
    (against each case's median measurement)."""
    rows = []
    for case in cases:
        results = [measure_in_fresh_process(case, threads) for _ in range(repeats)]
        measured = sorted(r["seconds"] for r in results)
        median = statistics.median(measured)
        pred = predicted_seconds(cal, case, results[0], source)
        rows.append({**asdict(case), "label": case.label(), "predicted_seconds": pred,
                     "measured_seconds": median, "measured_runs_seconds": measured,
                     "measurement_spread": measured[-1] / measured[0] - 1.0, "shapes": results[0]["shapes"],
                     "relative_error": (pred - median) / median})
        print(f"{case.label()}: predicted {pred:.2f} s, measured {median:.2f} s (median of {repeats}, "
              f"{measured[0]:.2f}-{measured[-1]:.2f}) ({rows[-1]['relative_error']:+.1%})", file=sys.stderr, flush=True)
    worst = max((abs(r["relative_error"]) for r in rows), default=0.0)
    return {"calibration_host": cal.host.model_dump(), "threads": threads, "repeats": repeats, "cases": rows,
            "max_relative_error": worst, "off_grid_cases": sum(r["off_grid"] for r in rows),
            "max_measurement_spread": max((r["measurement_spread"] for r in rows), default=0.0)}


def main() -> None:
    """Worker entry point: one case, one JSON line on stdout."""
    args = json.loads(sys.argv[1])
    print(json.dumps(run_case(Case(**args["case"]), int(args["threads"]))))


if __name__ == "__main__":
    main()
