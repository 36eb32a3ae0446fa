"""Measured memory of a client's process (what a reply reports as its peak)."""

from __future__ import annotations

import torch

from fedzo.runs import peak_rss_bytes


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process so far: allocated on a CUDA device, else peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return peak_rss_bytes()
