"""`fedzo run SCENARIO`: run (or resume) a federated scenario into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the `run` sub-command."""
    p = sub.add_parser("run", help="run a federated scenario (simulation or in-process)",
                       description="Run a scenario file; the run directory gets the resolved scenario, "
                                   "metrics.jsonl, the update log, summary.json and plots.")
    p.add_argument("scenario", nargs="?", help="scenario YAML file")
    p.add_argument("--out", help="run directory (default: the scenario's out, else runs/<name>)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("--engine", choices=["inprocess", "simulation"], help="override federation.engine")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="do not write RUN/plots at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load and validate the scenario, then run or resume it."""
    from fedzo.errors import ConfigError
    from fedzo.federation.run import run_federated
    from fedzo.scenario import Scenario, load_scenario

    if args.resume:
        from fedzo.configs import validate
        from fedzo.runs import RunDir

        stored = RunDir.open(args.resume).config()
        if stored.pop("kind", None) != "federated":
            raise ConfigError(f"{args.resume}: not a federated run (use `fedzo train --resume` for centralized runs)")
        scenario = validate(Scenario, stored, f"{args.resume}/scenario.yaml")
        out = Path(args.resume)
    elif args.scenario:
        scenario = load_scenario(args.scenario)
        out = Path(args.out) if args.out else scenario.out_dir
    else:
        raise ConfigError("give a scenario file, or --resume DIR")
    summary = run_federated(scenario, out, resume=bool(args.resume), force=args.force, engine=args.engine,
                            progress=not args.no_progress, plots=not args.no_plots)
    print(f"run: {out}")
    print(f"accuracy: final {summary.get('final_accuracy')}, best {summary.get('best_accuracy')}")
    print(f"simulated {summary.get('sim_seconds', 0):.1f} s, host {summary.get('host_seconds', 0):.1f} s, "
          f"bytes up {summary.get('bytes_up')}, down {summary.get('bytes_down')}")
    print(f"model_sha256: {summary.get('model_sha256')}")
    return 0
