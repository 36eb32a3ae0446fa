"""`fedzo memory`: BP vs ZO memory breakdown, largest model per budget, validation."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from fedzo.errors import ConfigError
from fedzo.units import format_bytes, parse_bytes

if TYPE_CHECKING:
    from fedzo.devices.memory import MemoryBreakdown, Mode

_ROWS = (
    "weights", "gradients", "optimizer_states", "optimizer_temporaries", "activations",
    "logits", "perturbation_chunk", "runtime_overhead", "allocator_reserve",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `memory` sub-command."""
    p = subparsers.add_parser(
        "memory", help="predict training memory (BP vs ZO); --validate measures it",
        description="Predict the peak memory of BP and ZO training of a model, or with "
        "--validate measure real peaks on this CPU and compare.",
    )
    p.add_argument("--model", default="smollm2-135m",
                   help="architecture name (see fedzo.devices.architectures.MODEL_CONFIGS)")
    p.add_argument("--batch", type=int, default=16, help="batch size")
    p.add_argument("--seq", type=int, default=64, help="sequence length in tokens")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--peft", default="full", choices=["full", "lora", "prefix"])
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "adam"],
                   help="BP optimizer")
    p.add_argument("--zo-optimizer", default="sgd", choices=["sgd", "momentum", "adam"],
                   help="ZO optimizer: sgd (ZO-SGD, no state), momentum (ZO-SGD-MMT: one buffer), adam "
                   "(ZO-Adam: two buffers)")
    p.add_argument("--zo-estimator", default="central", choices=["central", "forward-grad"],
                   help="ZO estimator: central (finite differences; one-sided and fzoo hold the same) or "
                   "forward-grad (tangents of the activations, the dense direction, unfused attention)")
    p.add_argument("--logits", default="last", choices=["last", "full"],
                   help="vocabulary logits kept: at the answer position only, as fedzo's classifiers score "
                   "(last; what a run's fleet check prices), or at every position, as language-model "
                   "fine-tuning on whole sequences does (full)")
    p.add_argument("--checkpoint-fraction", type=float, default=0.0,
                   help="share of layers recomputed in backward (BP)")
    p.add_argument("--budget", help='memory budget, e.g. "1GB": also print the largest '
                   "model of the family that fits, BP and ZO")
    p.add_argument("--device", help="device profile name: use its budget and check the fit")
    p.add_argument("--validate", action="store_true",
                   help="measure peaks in fresh subprocesses and compare (about 12 min on 2 idle cores)")
    p.add_argument("--repeats", type=int, default=3,
                   help="--validate: fresh processes per case; the table compares their median (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _estimate(args: argparse.Namespace, model: str, mode: Mode) -> MemoryBreakdown:
    """The memory breakdown of ``model`` under ``mode`` with the command's settings."""
    from fedzo.devices.architectures import model_config
    from fedzo.devices.memory import estimate_memory

    return estimate_memory(
        model_config(model), mode, batch=args.batch, seq=args.seq,
        dtype=args.dtype, peft=args.peft, lora_rank=args.lora_rank,
        optimizer=args.optimizer if mode == "bp" else args.zo_optimizer,
        checkpoint_fraction=args.checkpoint_fraction, forward_grad=args.zo_estimator == "forward-grad",
        logits=args.logits,
    )


def largest_fitting(args: argparse.Namespace, budget: int, mode: Mode) -> str | None:
    """Largest member of ``args.model``'s family whose ``mode`` training fits ``budget``."""
    from fedzo.devices.architectures import FAMILIES, family_of

    best = None
    for name in FAMILIES[family_of(args.model)]:
        if _estimate(args, name, mode).total <= budget:
            best = name
    return best


def _device_fits(args: argparse.Namespace, budget: int | None, out: dict[str, Any], lines: list[str]) -> int:
    """Check BP and ZO against ``--device``'s budget into ``out`` and ``lines``; returns the budget."""
    from fedzo.devices.architectures import model_config
    from fedzo.devices.fit import check_fit
    from fedzo.devices.profiles import get_profile

    profile = get_profile(args.device)
    for mode in ("bp", "zo"):
        rep = check_fit(profile, model_config(args.model), mode, args.batch, args.seq,
                        args.peft, model_name=args.model, dtype=args.dtype,
                        optimizer=args.optimizer if mode == "bp" else args.zo_optimizer,
                        lora_rank=args.lora_rank, checkpoint_fraction=args.checkpoint_fraction, logits=args.logits,
                        forward_grad=mode == "zo" and args.zo_estimator == "forward-grad")
        out[f"fit_{mode}"] = {"fits": rep.fits, "message": rep.message()}
        lines.append(rep.message())
    return budget if budget is not None else profile.memory_budget


def run(args: argparse.Namespace) -> int:
    """Print breakdowns (or the validation table); returns the exit code."""
    if args.validate:
        from fedzo.devices.validate import format_table, results_json, validate

        results = validate(repeats=args.repeats)  # refuses repeats < 1, naming the value
        print(json.dumps(results_json(results), indent=2) if args.json else format_table(results))
        return 0
    if args.batch < 1 or args.seq < 1:
        raise ConfigError(f"--batch/--seq: must be >= 1 (got {args.batch}, {args.seq})")
    bp, zo = _estimate(args, args.model, "bp"), _estimate(args, args.model, "zo")
    budget = None
    if args.budget is not None:
        try:
            # a bare number is GB (``--budget 1`` = 1 GB); units as in the profiles otherwise
            raw = args.budget.strip()
            budget = parse_bytes(f"{raw}GB" if raw.replace(".", "", 1).isdigit() else raw)
        except ValueError as exc:
            raise ConfigError(f"--budget: {args.budget!r} {exc}") from None
    out: dict[str, Any] = {"model": args.model, "batch": args.batch, "seq": args.seq,
                           "dtype": args.dtype, "peft": args.peft, "optimizer": args.optimizer,
                           "zo_optimizer": args.zo_optimizer, "zo_estimator": args.zo_estimator,
                           "logits": args.logits, "bp": bp.as_dict(), "zo": zo.as_dict()}
    fit_lines: list[str] = []
    if args.device:
        budget = _device_fits(args, budget, out, fit_lines)
    if budget is not None:
        out["budget"] = budget
        out["largest_fitting"] = {m: largest_fitting(args, budget, m) for m in ("bp", "zo")}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.model}: batch {args.batch} x seq {args.seq}, {args.dtype}, peft {args.peft}, logits {args.logits}, "
          f"BP optimizer {args.optimizer}, ZO optimizer {args.zo_optimizer}, ZO estimator {args.zo_estimator}")
    print(f"{'component':<24}{'BP':>12}{'ZO':>12}")
    for row in _ROWS:
        print(f"{row:<24}{format_bytes(getattr(bp, row)):>12}{format_bytes(getattr(zo, row)):>12}")
    print(f"{'peak (total)':<24}{format_bytes(bp.total):>12}{format_bytes(zo.total):>12}")
    print(f"peak phase: BP {bp.peak_phase}, ZO {zo.peak_phase}")
    print(f"ZO needs {zo.total / bp.total:.2f} x the memory of BP.")
    for line in fit_lines:
        print(line)
    if budget is not None:
        lf = out["largest_fitting"]
        print(f"largest model that fits {format_bytes(budget)}: BP {lf['bp'] or 'none'}, "
              f"ZO {lf['zo'] or 'none'}")
    return 0
