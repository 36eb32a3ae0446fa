"""`fedzo run SCENARIO`: run (or resume) a federated scenario into a run directory."""

from __future__ import annotations

import argparse
import sys
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
    p.add_argument("--engine", choices=["inprocess", "batched", "simulation"], help="override federation.engine")
    p.add_argument("--no-progress", action="store_true", help="no progress bar: one plain line per round instead")
    p.add_argument("--no-plots", action="store_true", help="do not write RUN/plots at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load and validate the scenario, then run or resume it."""
    from fedzo.config.scenario import load_scenario, scenario_from_dict
    from fedzo.errors import ConfigError
    from fedzo.federation.fleet import describe_fleet
    from fedzo.federation.run import run_federated
    from fedzo.runs import RunDir
    from fedzo.units import format_bytes

    if args.resume:
        stored = RunDir.open(args.resume).config()
        if stored.pop("kind", None) != "federated":
            raise ConfigError(f"{args.resume}: not a federated run (use `fedzo train --resume` for centralized runs)")
        scenario = scenario_from_dict(stored, f"{args.resume}/scenario.yaml", kind="run")
        if args.scenario:  # given too: it must be the run's own
            _same_scenario(load_scenario(args.scenario), scenario, args.scenario, args.resume)
        out = Path(args.resume)
    elif args.scenario:
        scenario = load_scenario(args.scenario)
        out = Path(args.out) if args.out else scenario.out_dir
    else:
        raise ConfigError("give a scenario file, or --resume DIR")
    args.resume_hint = f"fedzo run --resume {out}"  # printed if Ctrl-C stops the run
    print(f"{scenario.name}: {describe_fleet(scenario)}", flush=True)
    s = run_federated(scenario, out, resume=bool(args.resume), force=args.force, engine=args.engine,
                      progress="lines" if args.no_progress else "bar", plots=not args.no_plots)
    print(f"run: {out}")
    print(f"accuracy: final {s.final_accuracy}, best {s.best_accuracy}")
    print(f"simulated {s.sim_seconds or 0:.1f} s, host {s.host_seconds or 0:.1f} s, "
          f"bytes up {format_bytes(s.bytes_up)}, down {format_bytes(s.bytes_down)}")
    print(f"model_sha256: {s.model_sha256}")
    if s.rounds_trained == 0 and not scenario.federation.allow_no_training:
        print(f"fedzo: warning: no client trained in any of the {s.rounds} rounds (every sampled client was offline, "
              f"late or rejected; see the 'skipped' field of the round records in {out}/metrics.jsonl). The "
              "accuracy is the initial model's. Check the fleet's availability and deadline, or set "
              "federation.allow_no_training: true if this is intended.", file=sys.stderr)
        return 3
    return 0


def _same_scenario(given: Any, stored: Any, path: str, run_dir: str) -> None:
    """Refuse ``fedzo run SCENARIO --resume DIR`` when SCENARIO is not the run's own (the
    engine may differ, as with --engine)."""
    from fedzo.errors import ConfigError
    from fedzo.runs import changed_keys

    changed = [k for k in changed_keys(stored.model_dump(mode="json"), given.model_dump(mode="json"))
               if k not in ("federation.engine", "out")]
    if changed:
        raise ConfigError(f"{path}: not the scenario of {run_dir} (changed: {', '.join(changed[:8])}); resume with "
                          f"`fedzo run --resume {run_dir}` alone, or start the changed scenario in a new directory "
                          f"(`fedzo run {path} --out NEW_DIR`)")
