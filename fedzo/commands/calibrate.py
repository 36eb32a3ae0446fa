"""`fedzo calibrate`: measure training steps on this machine into a calibration file, or
check the clock against fresh measurements (``--validate``)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedzo.errors import ConfigError

if TYPE_CHECKING:
    from fedzo.calibration.model import Calibration
    from fedzo.devices.work import Optimizer

DEFAULT_OUT = "clients/reference-host.calibration.json"
MODELS = ("smollm2-135m", "minilm-l6")
METHODS = ("zo", "bp", "fg")
PEFTS = ("full", "lora", "prompt")
ROWS = (4, 8, 16)
WIDTHS = (32, 64, 96)


def register(sub: Any) -> None:
    """Add the `calibrate` sub-command."""
    p = sub.add_parser(
        "calibrate", help="measure training-step seconds on this machine (the clock's reference)",
        description="Time fedzo's own ZO and backprop steps over a grid of models, tunings, batch sizes and "
                    "sequence lengths, fit seconds against the modelled work, and write (or extend) a calibration "
                    "file that scenarios name in fleet.calibration. --validate checks a calibration against "
                    "client-rounds measured in fresh processes.")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"calibration file to write or extend (default: {DEFAULT_OUT})")
    p.add_argument("--model", nargs="+", default=list(MODELS), help="models (embedded names)")
    p.add_argument("--method", nargs="+", default=list(METHODS), choices=METHODS,
                   help="zo: finite-difference ZO steps; bp: backprop; fg: forward-gradient ZO steps")
    p.add_argument("--peft", nargs="+", default=list(PEFTS), choices=("full", "lora", "prefix", "prompt"))
    p.add_argument("--checkpointing", action="store_true", help="backprop with activation checkpointing")
    p.add_argument("--updates-only", action="store_true",
                   help="measure no step group: only add the backprop optimizers' per-element update prices (per "
                        "step and per FedAvg client-round) to --out when it has none (scaled to the host's speed "
                        "when the file was measured, by its backprop grid points timed again)")
    p.add_argument("--rows", nargs="+", type=int, default=list(ROWS), help="batch sizes of the grid")
    p.add_argument("--widths", nargs="+", type=int, default=list(WIDTHS), help="sequence lengths of the grid")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per point (their median is kept)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the reference host's cores)")
    p.add_argument("--validate", action="store_true", help="check the calibration in --out instead of measuring")
    p.add_argument("--validate-ratios", action="store_true",
                   help="check the calibration's relative prices: pairs of configurations (ZO SmolLM2 prompt vs "
                        "backprop MiniLM, ...) measured alternately in fresh processes, predicted against measured "
                        "step-seconds ratios (max_ratio_error, goal <= 0.10); --processes repeats per pair")
    p.add_argument("--merge", nargs="+", metavar="FILE",
                   help="pool calibrations of this host measured at different times into --out instead of measuring "
                        "(each point: the median of its seconds over the files; each group fitted again)")
    p.add_argument("--reprice", nargs="+", metavar="RUN",
                   help="recompute finished runs' simulated clocks (calibrated or FLOP estimates) under the "
                        "calibration in --out; runs whose clock decided who took part (deadline, over-commit, "
                        "offline devices, auto catch-up, retried or faulted clients) are refused")
    p.add_argument("--processes", type=int, default=3,
                   help="--validate: fresh processes per case (the median is compared with the prediction)")
    p.add_argument("--cases", help="JSON file of validation cases (default: the built-in 10); with "
                                   "--validate-ratios a JSON list of {name, a, b} pairs of cases (default: the "
                                   "built-in 3)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from fedzo.calibration.measure import host_info, measure_points, measure_regeneration
    from fedzo.calibration.model import Calibration, fit_group, load_calibration
    from fedzo.devices.work import Tuning

    out = Path(args.out)
    old = load_calibration(out) if out.exists() else None
    regen = old.regen_seconds_per_element if old else measure_regeneration(args.threads)
    updates = (old.update_seconds_per_element, old.round_seconds_per_element) if old else (None, None)
    if updates[0] is None or updates[1] is None:
        updates = _measure_updates(args.threads, old, args.repeats)
    groups = {g.key: g for g in (old.groups if old else [])}
    shapes = [(r, w) for r in args.rows for w in args.widths]
    for model in [] if args.updates_only else args.model:
        for method in args.method:
            for peft in args.peft:
                tuning = Tuning.of(method, peft, checkpointing=args.checkpointing)
                points, group_regen = measure_points(model, tuning, shapes, threads=args.threads,
                                                     repeats=args.repeats)
                g = fit_group(model, method, peft, tuning.checkpointing, points, regen, group_regen,
                              measured=[datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")])
                groups[g.key] = g
                print(f"{g.label()}: {g.overhead_seconds:.3f} s + {g.seconds_per_gflop:.4f} s/GFLOP "
                      f"({len(points)} points)", file=sys.stderr, flush=True)
    cal = Calibration(host=old.host if old else host_info(args.threads), regen_seconds_per_element=regen,
                      groups=sorted(groups.values(), key=lambda g: g.key), update_seconds_per_element=updates[0],
                      round_seconds_per_element=updates[1],
                      merged_from=old.merged_from if old else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cal.to_json(), encoding="utf-8")
    return {"out": str(out), "groups": [g.label() for g in cal.groups], "sha256": cal.digest()}


def _measure_updates(threads: int, old: Calibration | None,
                     repeats: int) -> tuple[dict[Optimizer, float], dict[Optimizer, float]]:
    """The optimizer update prices, per step and per FedAvg client-round. Added to an existing
    file, they are scaled by the median over one backprop group's grid points (MiniLM-L6 full
    where the file has it) of their seconds in the file over the same points timed now, so
    that the host's drift since the file was measured does not enter the relative price of
    an update and a step."""
    from fedzo.calibration.measure import measure_points, measure_updates
    from fedzo.devices.work import Tuning

    step, round_ = measure_updates(threads, repeats)
    bp = sorted((g for g in (old.groups if old else []) if g.method == "bp" and not g.checkpointing),
                key=lambda g: (g.model != "minilm-l6", g.peft != "full", g.model, g.peft))
    if bp:
        g = bp[0]
        now, _ = measure_points(g.model, Tuning.of("bp", g.peft), [(p.rows, p.width) for p in g.points],
                                threads=threads, repeats=repeats)
        scale = statistics.median(p.seconds / q.seconds for p, q in zip(g.points, now, strict=True))
        step = {k: v * scale for k, v in step.items()}
        round_ = {k: v * scale for k, v in round_.items()}
        print(f"optimizer update prices scaled by {scale:.3f}: the median over {g.label()}'s {len(now)} grid points "
              "of its seconds in the file over the seconds timed now", file=sys.stderr, flush=True)
    print("optimizer update per step: " + ", ".join(f"{k} {v * 1e9:.3f}" for k, v in step.items())
          + " ns/element; per FedAvg client-round: " + ", ".join(f"{k} {v * 1e9:.3f}" for k, v in round_.items())
          + " ns/element", file=sys.stderr, flush=True)
    return step, round_


def _merge(files: list[str], out: Path) -> dict[str, Any]:
    from fedzo.calibration.merge import merge
    from fedzo.calibration.model import load_calibration

    cal = merge([(f, load_calibration(f)) for f in files])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(cal.to_json(), encoding="utf-8")
    return {"out": str(out), "groups": [g.label() for g in cal.groups], "sha256": cal.digest(), "merged": files}


def _reprice(runs: list[str], calibration: Path, as_json: bool) -> int:
    from fedzo.archives import expand
    from fedzo.calibration.model import load_calibration
    from fedzo.calibration.reprice import reprice

    new = load_calibration(calibration)
    results = [reprice(r, new) for r in expand(runs)]
    if as_json:
        print(json.dumps({"calibration": str(calibration), "runs": results}, indent=2))
        return 0
    for r in results:
        print(f"{r['run']}: simulated {r['old_sim_seconds']:.1f} s -> {r['new_sim_seconds']:.1f} s "
              f"({r['new_over_old'] or float('nan'):.3f}x) under {calibration}")
    return 0


def _validate_ratios(args: argparse.Namespace) -> int:
    from fedzo.calibration.model import load_calibration
    from fedzo.calibration.ratios import Pair, default_pairs, validate_ratios
    from fedzo.calibration.validate import Case
    from fedzo.environment import cpu_capability

    cal = load_calibration(args.out)
    if args.cases:
        try:
            pairs = [Pair(p["name"], Case(**p["a"]), Case(**p["b"]))
                     for p in json.loads(Path(args.cases).read_text(encoding="utf-8"))]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"--cases {args.cases}: {exc!r}; expected a JSON list of pairs "
                              '{"name": ..., "a": {case}, "b": {case}}') from None
    else:
        pairs = default_pairs()
    here = cpu_capability()
    if cal.host.cpu_capability not in (None, here):
        print(f"fedzo: warning: {args.out} was measured on {cal.host.cpu_capability} kernels and this host runs "
              f"{here}: a calibration holds for the CPU type it was measured on; calibrate here first "
              f"(`fedzo calibrate --out MY.calibration.json`) and validate that", file=sys.stderr)
    result = validate_ratios(cal, pairs, args.threads, args.out, repeats=args.processes, capability=here)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"max ratio error {result['max_ratio_error']:.1%} over {len(result['pairs'])} pairs "
              f"(goal <= {result['goal']:.0%}: {'met' if result['meets_goal'] else 'not met'})")
    return 0


def default_cases() -> list[Any]:
    """Ten client-rounds of 4 steps on real batches: both models, ZO and BP, full / LoRA /
    prompt, several batch sizes, checkpointed backprop; four of them off the default grid
    (batch 12, or a token limit of 48 or 80)."""
    from fedzo.calibration.validate import Case

    return [
        Case("smollm2-135m", "zo", "prompt", 16, 64),
        Case("smollm2-135m", "zo", "full", 4, 64),
        Case("smollm2-135m", "zo", "lora", 12, 64, off_grid=True),
        Case("smollm2-135m", "bp", "lora", 4, 64),
        Case("smollm2-135m", "bp", "prompt", 8, 80, off_grid=True),
        Case("smollm2-135m", "bp", "full", 4, 64, checkpointing=True),
        Case("minilm-l6", "bp", "full", 16, 64),
        Case("minilm-l6", "bp", "full", 12, 48, off_grid=True),
        Case("minilm-l6", "zo", "full", 4, 64),
        Case("minilm-l6", "zo", "lora", 8, 80, off_grid=True),
    ]


def run(args: argparse.Namespace) -> int:
    """Measure (default), merge (--merge), validate (--validate) or reprice runs (--reprice); print the result."""
    for flag, value in (("--repeats", args.repeats), ("--processes", args.processes)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be at least 1")
    modes = [flag for flag, on in (("--merge", args.merge), ("--validate", args.validate),
                                   ("--validate-ratios", args.validate_ratios), ("--reprice", args.reprice)) if on]
    if len(modes) > 1:
        raise ConfigError(f"{' and '.join(modes)}: choose one (merge first, then validate or reprice with the "
                          "merged --out)")
    if args.reprice:
        return _reprice(args.reprice, Path(args.out), args.json)
    if args.validate_ratios:
        return _validate_ratios(args)
    if args.merge:
        result = _merge(args.merge, Path(args.out))
    elif args.validate:
        from fedzo.calibration.model import load_calibration
        from fedzo.calibration.validate import Case, validate

        cal = load_calibration(args.out)
        if args.cases:
            try:
                cases = [Case(**c) for c in json.loads(Path(args.cases).read_text(encoding="utf-8"))]
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(f"--cases {args.cases}: {exc}; expected a JSON list of cases") from None
        else:
            cases = default_cases()
        result = validate(cal, cases, args.threads, args.out, repeats=args.processes)
    else:
        result = _measure(args)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.validate:
        print(f"max relative error {result['max_relative_error']:.1%} over {len(result['cases'])} cases "
              f"({result['off_grid_cases']} off the grid)")
    else:
        print(f"wrote {result['out']} ({len(result['groups'])} groups, sha256 {result['sha256'][:12]})")
    return 0
