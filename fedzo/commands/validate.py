"""`fedzo validate FILE...`: check scenario files without running them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fedzo.errors import FedzoError


def register(sub: Any) -> None:
    """Add the `validate` sub-command."""
    p = sub.add_parser("validate", help="validate scenario files (all problems at once)")
    p.add_argument("files", nargs="*", help="scenario YAML files")
    p.add_argument("--reference", action="store_true", help="print the scenario reference (Markdown)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate each file; exit 2 when any fails."""
    from fedzo.scenario import load_scenario, scenario_reference

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
        fed = s.federation
        print(f"{f}: ok ({s.model} on {s.task}; {fed.num_clients} clients, {fed.rounds} rounds, "
              f"{fed.optimizer}, catch-up {fed.catch_up}, engine {fed.engine})")
    return 2 if failed else 0
