"""What the experiment scripts share: resumable scenario runs and measured peak memory."""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedzo.archives import locate

IN_PROCESS = False
"""Run each `fedzo` command inside this interpreter instead of a fresh process. A fresh
process pays about 10 s of imports (torch, transformers, Flower) per run, which dominates
runs of the tiny test models; the tests set this. Experiments on real models keep the
default: each run then has its own process, so its peak memory and host seconds are its own
and a crash in one run leaves the experiment standing."""


def fedzo_command(*args: str) -> list[str]:
    """The `fedzo` command line, run by this interpreter (works without the entry point)."""
    return [sys.executable, "-m", "fedzo", *args]


def run_fedzo(out: Path, *args: str) -> str:
    """Run `fedzo ARGS` for the run directory ``out`` (in a fresh process unless
    ``IN_PROCESS``) and return its stdout; RuntimeError with the output's tail on failure."""
    cmd = fedzo_command(*args)
    code, stdout, stderr = _in_process(args) if IN_PROCESS else _in_subprocess(cmd)
    if code != 0:
        tail = " | ".join((stderr or stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{out}: `{' '.join(cmd[2:])}` failed (exit {code}): {tail}")
    return stdout


def _in_subprocess(cmd: list[str]) -> tuple[int, str, str]:
    """Run ``cmd`` in a fresh process: its exit code, stdout and stderr."""
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def _in_process(args: tuple[str, ...]) -> tuple[int, str, str]:
    """`fedzo.cli.main(args)` with its output captured; torch's thread count (which a run
    sets from its scenario) is restored afterwards."""
    import torch

    from fedzo.cli import main

    threads, out, err = torch.get_num_threads(), io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's refusals
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        torch.set_num_threads(threads)
    return code, out.getvalue(), err.getvalue()


def run_scenario(scenario: str | Path, out: Path, *, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run a scenario into ``out`` unless it finished there before; resume a cut run.

    ``overrides`` (sections of the version-2 format, e.g. ``{"federation": {"catch_up":
    "seed_pool"}}``) are merged into the scenario (read in any format), which is then
    written next to the run as ``OUT.yaml``.
    Returns the run's summary.json. Raises RuntimeError naming the run when it fails.
    """
    summary = locate(out) / "summary.json"  # a finished run may sit in the experiment's runs.zip
    if summary.exists():
        return json.loads(summary.read_text(encoding="utf-8"))
    path = Path(scenario)
    if overrides:
        from fedzo.config.migrate import upgrade
        from fedzo.config.validation import read_yaml

        data = upgrade(read_yaml(path), "scenario")
        for key, value in overrides.items():
            data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
        out.parent.mkdir(parents=True, exist_ok=True)
        path = out.parent / f"{out.name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    where = ["--resume", str(out)] if (out / "metrics.jsonl").exists() else [str(path), "--out", str(out)]
    args = ["run", *where, "--no-plots", "--no-progress"]
    print(f"[{out.name}] fedzo {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    run_fedzo(out, *args)
    print(f"[{out.name}] done in {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(summary.read_text(encoding="utf-8"))


def cached_evaluation(path: Path, out: Path, *args: str) -> dict[str, Any]:
    """`fedzo evaluate ARGS --split test --batch-size 32 --json` (the 1000-sentence test
    split), cached in ``path`` (or its archived copy) so a rerun of the experiment reuses it."""
    path = locate(path)
    if not path.exists():
        stdout = run_fedzo(out, "evaluate", *args, "--split", "test", "--batch-size", "32", "--json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(stdout.strip().splitlines()[-1] + "\n", encoding="utf-8")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def write_results(out: Path, result: dict[str, Any], format_table: Callable[[dict[str, Any]], str]) -> None:
    """Write OUT/results.json and OUT/table.md (the table made from that data) and print the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = format_table(result)
    (out / "table.md").write_text(table, encoding="utf-8")
    print(table)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max: the spread over seeds
    the experiments report."""
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}
