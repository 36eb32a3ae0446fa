"""`fedzo` command line: one sub-command per module in :mod:`fedzo.commands`.

Each command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (a callable taking the parsed namespace and returning an exit code). User
errors (:class:`fedzo.errors.FedzoError`) are printed as one line, without traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Sequence

from fedzo.errors import FedzoError, WriteError

_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}

# Order here is the order in `fedzo --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "fedzo.commands.run",
    "fedzo.commands.validate",
    "fedzo.commands.train",
    "fedzo.commands.bench",
    "fedzo.commands.memory",
    "fedzo.commands.calibrate",
    "fedzo.commands.assets",
    "fedzo.commands.evaluate",
    "fedzo.commands.plot",
    "fedzo.commands.report",
)


def _quiet_environment() -> None:
    """Turn off telemetry and update checks of the libraries we drive."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-tensor "Loading weights" bars
    # peft asks transformers 5 for a renamed property on every wrap; not actionable for users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("fedzo")
    except metadata.PackageNotFoundError:  # run from a checkout without installing
        import fedzo

        return str(fedzo.__version__)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="fedzo",
        description="Federated zeroth-order fine-tuning simulator (MeZO over Flower).",
    )
    parser.add_argument("--version", action="version", version=f"fedzo {_version()}",
                        help="print fedzo's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _log_to_stderr() -> None:
    """fedzo's own notes (one line each) on stderr; other libraries stay at warnings."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("fedzo: %(message)s"))
    logger = logging.getLogger("fedzo")
    if not logger.handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fedzo` console script; returns the process exit code."""
    _quiet_environment()
    _log_to_stderr()
    parser = build_parser()
    args = parser.parse_args(argv)
    again = lambda: getattr(args, "resume_hint", None)
    try:
        return int(args.func(args) or 0)
    except WriteError as exc:
        print(f"fedzo {args.command}: error: {exc}, then " + (f"continue with: {again()}" if again() else
                                                              "run the command again"), file=sys.stderr)
        return 2
    except FedzoError as exc:
        print(f"fedzo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a write no fedzo code wraps: still one line that names the file and the cause
        if exc.errno not in _DISK_ERRORS:
            raise
        print(f"fedzo {args.command}: error: cannot write {exc.filename or 'a file'} ({exc.strerror}); free space or "
              "fix the directory's permissions, then " + (f"continue with: {again()}" if again() else
                                                          "run the command again"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fedzo {args.command}: interrupted" + (f"; continue with: {again()}" if again() else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
