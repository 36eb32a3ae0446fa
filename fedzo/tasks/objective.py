"""The objective of a run: the classifier module (model, PEFT wrapping, prompt) and its data.

Centralized training, federated clients and the federated server all build the same
objective from the same configuration sections, so their models start identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedzo.config.sections import DataConfig, ModelConfig, RuntimeConfig
from fedzo.errors import ConfigError
from fedzo.tasks.classifiers import Classifier
from fedzo.tasks.types import Example


@dataclass
class Objective:
    """What training touches: the classifier module and its data."""

    classifier: Classifier
    train: list[Example]
    eval: list[Example]
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device: 'cuda' requested but no CUDA device is available; "
                          "allowed here: cpu, auto")
    return torch.device(name)


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # model.dtype names


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype of ``model.dtype`` on ``device``: fp16 only on CUDA (CPU kernels for
    half precision are missing or emulated), bf16 only where the device supports it."""
    if name not in TORCH_DTYPES:
        raise ConfigError(f"model.dtype: {name!r} is not one of {', '.join(TORCH_DTYPES)}")
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(f"model.dtype: 'fp16' needs a CUDA device, but training runs on {device}; "
                          "allowed on CPU: fp32, bf16 (or set runtime.device: cuda on a machine with a GPU)")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"model.dtype: 'bf16' is not supported by the GPU {torch.cuda.get_device_name(device)}; "
                          "allowed here: fp32, fp16")
    return TORCH_DTYPES[name]


def build_objective(model: ModelConfig, data: DataConfig, runtime: RuntimeConfig, seed: int) -> Objective:
    """Load model, task and PEFT wrapping; returns the classifier and its splits.

    ``seed`` fixes the task's split; adapters start from their own fixed seed, so runs
    that differ only in the run seed start from the same model.
    """
    from fedzo.models import load_model
    from fedzo.models.adapters import apply_peft
    from fedzo.tasks.classifiers import build_classifier
    from fedzo.tasks.registry import load_task

    device = resolve_device(runtime.device)
    loaded = load_model(model.name, dtype=resolve_dtype(model.dtype, device))
    task = load_task(data.task, seed=seed, options=data.task_options())
    loaded.model = apply_peft(loaded.model, model.peft, r=model.lora_rank, num_virtual_tokens=model.virtual_tokens)
    clf = build_classifier(loaded, task, data.prompt, max_length=data.max_length).to(device)
    clf.eval()
    clf.use_forward(runtime.forward)
    train = list(task.train[: data.train_examples] if data.train_examples else task.train)
    split = task.dev if data.eval_split == "dev" else task.test
    evals = list(split[: data.eval_examples] if data.eval_examples else split)
    if not train or not evals:
        raise ConfigError(f"data.task {data.task!r}: empty train or {data.eval_split} split")
    return Objective(clf, train, evals, device)
