"""`fedzo train`: centralized ZO or backprop fine-tuning (the baseline of federated runs).

Options come from an optional YAML file (the sections of :class:`fedzo.config.train.TrainConfig`),
overridden by flags. Every leaf option has one flag named after it (``--lr`` for
``optimizer.lr``); a section's ``name`` is the section's flag (``--model``, ``--optimizer``).
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fedzo.config.migrate import upgrade


def option_paths() -> dict[str, tuple[str, FieldInfo]]:
    """Flag name -> (dotted config path, field) for every leaf option of TrainConfig."""
    from fedzo.config.train import TrainConfig

    out: dict[str, tuple[str, FieldInfo]] = {}
    for name, field in TrainConfig.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            for sub, subfield in ann.model_fields.items():
                flag = name if sub == "name" else sub
                out[flag.replace("_", "-")] = (f"{name}.{sub}", subfield)
        elif name != "version":
            out[name.replace("_", "-")] = (name, field)
    return out


def _add_fields(p: argparse.ArgumentParser) -> None:
    for flag, (path, field) in option_paths().items():
        ann = field.annotation
        help_ = f"{field.description} ({path}; default: {field.default})"
        dest = path.replace(".", "__")
        if ann is bool:
            p.add_argument(f"--{flag}", dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_)
            continue
        choices = None
        listed = False
        for arg in (ann, *typing.get_args(ann)):
            if typing.get_origin(arg) is typing.Literal:
                choices = list(typing.get_args(arg))
            listed = listed or typing.get_origin(arg) is list
        p.add_argument(f"--{flag}", dest=dest, default=None, choices=choices, metavar=None if choices else "V",
                       nargs="+" if listed else None, help=help_)


def register(sub: Any) -> None:
    """Add the `train` sub-command."""
    p = sub.add_parser("train", help="centralized ZO/FO fine-tuning with periodic evaluation",
                       description="Fine-tune one model in one process. Options come from an optional "
                                   "YAML file (TrainConfig sections), overridden by flags.")
    p.add_argument("config", nargs="?", help="YAML file with train options (optional)")
    p.add_argument("--out", help="run directory (default: runs/<name>)")
    p.add_argument("--resume", metavar="DIR", help="continue an interrupted run in DIR")
    p.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_fields(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the config (file, then flags), then train or resume."""
    from fedzo.config.train import train_config_from_dict
    from fedzo.config.validation import read_yaml
    from fedzo.runs import RunDir
    from fedzo.train import train

    data: dict[str, Any] = {}
    source = "command line"
    if args.resume:
        data = RunDir.open(args.resume).config()
        data.pop("kind", None)
        source = f"{args.resume}/scenario.yaml"
    elif args.config:
        data, source = read_yaml(args.config), args.config
    data = upgrade(data, "train")
    for path, _ in option_paths().values():
        value = getattr(args, path.replace(".", "__"), None)
        if value is None:
            continue
        *section, key = path.split(".")
        node = data.setdefault(section[0], {}) if section else data
        node[key] = value
    cfg = train_config_from_dict(data, source)
    out = Path(args.resume or args.out or Path("runs") / cfg.name)
    args.resume_hint = f"fedzo train --resume {out}"  # printed if Ctrl-C stops the run
    summary = train(cfg, out, resume=bool(args.resume), force=args.force, progress=not args.no_progress)
    print(f"run: {out}")
    print(f"accuracy: {summary.initial_accuracy} -> {summary.final_accuracy} (best {summary.best_accuracy})")
    print(f"model_sha256: {summary.model_sha256}")
    return 0
