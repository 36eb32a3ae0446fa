"""Reading configurations written in an older format: version 1 (flat) into version 2.

Version 1 (fedzo before 2026-12) kept model and data keys at the top level, and the
ZO and optimizer settings of a federated run inside ``federation:``. Version 2 groups
them into the ``model``, ``data``, ``zo``, ``optimizer`` and ``runtime`` sections that
centralized and federated runs share. :func:`upgrade` moves every known version-1 key to
its version-2 place, fills in the version-1 defaults that changed (a federated run's
model and task, and its device), and leaves unknown keys where they are, so the
validator still names them. :data:`RENAMED` is the table the README prints.
"""

from __future__ import annotations

from typing import Any, Literal

VERSION = 2

# version-1 key -> version-2 path, for keys at the top level (both kinds of run)
_TOP: dict[str, str] = {
    "model": "model.name", "peft": "model.peft", "lora_rank": "model.lora_rank",
    "virtual_tokens": "model.virtual_tokens",
    "task": "data.task", "prompt": "data.prompt", "max_length": "data.max_length",
    "train_examples": "data.train_examples", "eval_examples": "data.eval_examples",
    "eval_split": "data.eval_split", "eval_batch_size": "data.eval_batch_size",
    "threads": "runtime.threads", "device": "runtime.device",
}
# centralized (TrainConfig) top-level keys that moved into a section
_TRAIN: dict[str, str] = {
    "optimizer": "optimizer.name", "lr": "optimizer.lr", "schedule": "optimizer.schedule",
    "warmup_steps": "optimizer.warmup", "hybrid_fo": "optimizer.hybrid_fo", "fo_lr": "optimizer.fo_lr",
    "eps": "zo.eps", "q": "zo.q", "estimator": "zo.estimator", "generator": "zo.generator",
    "distribution": "zo.distribution", "chunk_size": "zo.chunk_size", "compile": "zo.compile",
    "mask": "zo.mask", "mask_density": "zo.mask_density", "blockwise": "zo.blockwise",
    "batch_size": "data.batch_size",
}
# keys of a version-1 ``federation:`` section that left it
_FEDERATION: dict[str, str] = {
    "optimizer": "optimizer.name", "lr": "optimizer.lr", "schedule": "optimizer.schedule",
    "warmup_rounds": "optimizer.warmup", "eps": "zo.eps", "q": "zo.q", "estimator": "zo.estimator",
    "generator": "zo.generator", "distribution": "zo.distribution", "chunk_size": "zo.chunk_size",
    "batch_size": "data.batch_size", "seed": "seed",
}
# version-1 defaults of a federated run that version 2 changed
_FEDERATED_V1_DEFAULTS: dict[str, Any] = {
    "model.name": "tiny-llama", "data.task": "synthetic-sentiment", "runtime.device": "cpu",
}

RENAMED: tuple[tuple[str, str], ...] = tuple(
    sorted(set(_TOP.items()) | set(_TRAIN.items())
           | {(f"federation.{k}", v) for k, v in _FEDERATION.items()}))


def is_version_1(data: dict[str, Any]) -> bool:
    """Whether ``data`` is written in the flat version-1 format."""
    if "version" in data:
        return bool(data["version"] == 1)
    if any(k in data and not isinstance(data[k], dict) for k in ("model", "optimizer")):
        return True
    if any(k in data for k in set(_TOP) - {"model"} | set(_TRAIN) - {"optimizer"}):
        return True
    fed = data.get("federation")
    return isinstance(fed, dict) and any(k in fed for k in _FEDERATION)


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    *sections, key = path.split(".")
    node = out
    for s in sections:
        node = node.setdefault(s, {})
        if not isinstance(node, dict):  # a malformed file: leave it to the validator
            return
    node[key] = value


def _has(out: dict[str, Any], path: str) -> bool:
    node: Any = out
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def upgrade(data: dict[str, Any], kind: Literal["scenario", "train", "run"]) -> dict[str, Any]:
    """``data`` in the version-2 format (a copy; version-2 input comes back as it is).

    ``kind``: ``scenario`` (a scenario file; version 1 gave it a ``laptop-cpu`` fleet by
    default), ``run`` (a federated run directory's stored configuration; no stored
    fleet meant the host stand-in) or ``train`` (a centralized run).
    """
    if not is_version_1(data):
        return dict(data)
    out: dict[str, Any] = {}
    moved = {**_TOP, **(_TRAIN if kind == "train" else {})}
    for key, value in data.items():
        if key == "version":
            continue
        if key in moved:
            _put(out, moved[key], value)
        elif key == "federation" and isinstance(value, dict):
            rest = {k: v for k, v in value.items() if k not in _FEDERATION}
            for k, v in value.items():
                if k in _FEDERATION:
                    _put(out, _FEDERATION[k], v)
            out["federation"] = rest
        else:
            out[key] = value
    if kind != "train":
        for path, default in _FEDERATED_V1_DEFAULTS.items():
            if not _has(out, path):
                _put(out, path, default)
        if kind == "scenario" and "fleet" not in out:
            out["fleet"] = {}
    out["version"] = VERSION
    return out
