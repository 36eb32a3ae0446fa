"""`fedzo validate FILE...`: check scenario files without running them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from fedzo.errors import FedzoError


def register(sub: Any) -> None:
    """Add the `validate` sub-command."""
    p = sub.add_parser("validate", help="validate scenario files (all problems at once)")
    p.add_argument("files", nargs="*", help="scenario YAML files")
    p.add_argument("--reference", action="store_true", help="print the scenario reference (Markdown)")
    p.add_argument("--upgrade", action="store_true",
                   help="print each file in the current format (version 2), after validating it")
    p.add_argument("--quick", action="store_true",
                   help="check the schema only; by default validate also opens what the run will open (data, "
                        "model and tokenizer, device, device profiles, calibration) and checks memory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate each file; exit 2 when any fails."""
    from fedzo.config.migrate import upgrade
    from fedzo.config.reference import scenario_reference
    from fedzo.config.scenario import load_scenario
    from fedzo.config.validation import read_yaml
    from fedzo.federation.preflight import preflight

    if args.reference:
        sys.stdout.write(scenario_reference())
        return 0
    if not args.files:
        print("fedzo validate: give scenario files (or --reference)", file=sys.stderr)
        return 2
    failed = 0
    for f in args.files:
        try:
            s = load_scenario(f)
        except FedzoError as exc:
            failed += 1
            print(f"{exc}", file=sys.stderr)
            continue
        if args.upgrade:
            sys.stdout.write(yaml.safe_dump(upgrade(read_yaml(f), "scenario"), sort_keys=False))
            continue
        fed = s.federation
        print(f"{f}: schema ok ({s.model.name} on {s.data.task}; {fed.num_clients} clients, {fed.rounds} rounds, "
              f"{s.optimizer.name}, catch-up {fed.catch_up}, engine {fed.engine})", flush=True)
        if args.quick:
            continue
        print("  opening what the run opens (data, model, fleet, calibration): about as long as a run's setup",
              flush=True)
        checks = preflight(s)
        for c in checks:
            print(c.line() if c.status != "error" else f"  {c.part}: error", flush=True)
        errors = [c for c in checks if c.status == "error"]
        for c in errors:
            print(f"{f}: {c.detail}", file=sys.stderr)
        failed += bool(errors)
    return 2 if failed else 0
