"""`fedzo train`: centralized ZO or backprop fine-tuning (the baseline of federated runs)."""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any

from fedzo.configs import read_yaml, validate


def _add_fields(p: argparse.ArgumentParser) -> None:
    from fedzo.train import TrainConfig

    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        ann = field.annotation
        default = field.default
        help_ = f"{field.description} (default: {default})"
        if ann is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_)
            continue
        choices = None
        for arg in (ann, *typing.get_args(ann)):
            if typing.get_origin(arg) is typing.Literal:
                choices = list(typing.get_args(arg))
        p.add_argument(flag, dest=name, default=None, choices=choices, metavar=None if choices else "V", help=help_)


def register(sub: Any) -> None:
    """Add the `train` sub-command."""
    p = sub.add_parser("train", help="centralized ZO/FO fine-tuning with periodic evaluation",
                       description="Fine-tune one model in one process. Options come from an optional "
                                   "YAML file of TrainConfig keys, overridden by flags.")
    p.add_argument("config", nargs="?", help="YAML file with train options (optional)")
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_fields(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the config (file, then flags), then train or resume."""
    from fedzo.train import TrainConfig, train

    data: dict[str, Any] = {}
    source = "command line"
    if args.resume:
        from fedzo.runs import RunDir

        stored = RunDir.open(args.resume).config()
        stored.pop("kind", None)
        data.update(stored)
        source = f"{args.resume}/scenario.yaml"
    elif args.config:
        data.update(read_yaml(args.config))
        source = args.config
    for name in TrainConfig.model_fields:
        v = getattr(args, name, None)
        if v is not None:
            data[name] = v
    cfg = validate(TrainConfig, data, source)
    out = Path(args.resume or args.out or Path("runs") / cfg.name)
    summary = train(cfg, out, resume=bool(args.resume), force=args.force, progress=not args.no_progress)
    acc = summary.get("final_accuracy")
    print(f"run: {out}")
    print(f"accuracy: {summary.get('initial_accuracy')} -> {acc} (best {summary.get('best_accuracy')})")
    print(f"model_sha256: {summary['model_sha256']}")
    return 0
