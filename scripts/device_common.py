"""Helpers shared by the GPU check's scripts (scripts/device_check.py and its parts):
timing with CUDA waited for, models built from their configs, and exact allocated peaks
counted above what earlier checks left allocated. Imports torch and transformers only."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedzo.devices.architectures import model_config


def sync(device: str) -> None:
    """Wait for the device (CUDA runs asynchronously)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after two warm-up calls."""
    fn()  # warm-up: kernels, allocator, compilation
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_model(name: str, device: str) -> torch.nn.Module:
    """``name``'s architecture from its config, random weights (seed 0), in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(model_config(name)).to(device).eval()


def loss_fn(model: torch.nn.Module, batch: int, seq: int, device: str) -> Callable[[], torch.Tensor]:
    """A loss on fixed random tokens and labels (last position only)."""
    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)  # type: ignore[union-attr,arg-type]  # a transformers config
    ids = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
    labels = torch.randint(0, vocab, (batch,), generator=g).to(device)

    def loss() -> torch.Tensor:
        logits = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        return torch.nn.functional.cross_entropy(logits.float(), labels)

    return loss


LEFTOVER = {"bytes": 0}  # tensors still allocated when the running check began (see release)


def release(device: str) -> int:
    """Collect what earlier checks left and return the bytes still allocated: each check's
    peaks are counted above this, so what an earlier check still holds is not charged to it."""
    import gc

    gc.collect()
    if not device.startswith("cuda"):
        return 0
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    LEFTOVER["bytes"] = int(torch.cuda.memory_allocated())
    return LEFTOVER["bytes"]


def peak_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Peak allocated bytes during one more call of ``fn``, above what earlier checks left
    allocated (None off CUDA)."""
    if not device.startswith("cuda"):
        return None
    fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated()) - LEFTOVER["bytes"]
