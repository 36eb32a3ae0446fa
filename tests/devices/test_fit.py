"""Budget checks: messages name the device, model, bytes and computed alternatives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedzo.devices.architectures import model_config
from fedzo.devices.fit import check_fit, require_fit
from fedzo.devices.memory import estimate_memory
from fedzo.devices.profiles import get_profile
from fedzo.errors import MemoryBudgetExceeded
from fedzo.units import format_bytes


def test_fits_on_a_big_device() -> None:
    rep = require_fit(get_profile("datacenter-gpu"), model_config("smollm2-135m"), "bp", 16, 128,
                      model_name="smollm2-135m", optimizer="adam")
    assert rep.fits and rep.alternatives == ()


def test_require_fit_message_is_computed(catalog: Path) -> None:
    dev = get_profile("dev", catalog).model_copy(update={"memory_budget": 1_500_000_000})
    cfg = model_config("smollm2-135m")
    with pytest.raises(MemoryBudgetExceeded) as err:
        require_fit(dev, cfg, "bp", 16, 128, model_name="smollm2-135m", optimizer="adam")
    msg = str(err.value)
    needed = estimate_memory(cfg, "bp", batch=16, seq=128, optimizer="adam").total
    assert "smollm2-135m" in msg and "on dev" in msg
    assert f"needs {needed / 1e9:.3g} GB ({needed} B" in msg
    assert "1.5 GB (1500000000 B) available" in msg
    # ZO at the same batch is the computed way out (weights ~0.54 GB fit, BP does not).
    m = re.search(r"ZO instead of BP at batch 16 \(([0-9.]+) (MB|GB)\)", msg)
    assert m is not None, msg
    assert estimate_memory(cfg, "zo", batch=16, seq=128).total <= 1.5e9
    assert "batch" in msg.split("What fits:")[1]


def test_smaller_batch_suggested_and_correct(catalog: Path) -> None:
    dev = get_profile("dev", catalog).model_copy(update={"memory_budget": 1_200_000_000})  # batch 1 fits, 64 not
    cfg = model_config("smollm2-135m")
    rep = check_fit(dev, cfg, "zo", 64, 512, model_name="smollm2-135m")
    assert not rep.fits
    m = re.match(r"batch (\d+) ", rep.alternatives[0])
    assert m is not None
    b = int(m.group(1))
    assert estimate_memory(cfg, "zo", batch=b, seq=512).total <= dev.memory_budget
    assert estimate_memory(cfg, "zo", batch=b + 1, seq=512).total > dev.memory_budget


def test_nothing_fits_says_so(catalog: Path) -> None:
    dev = get_profile("dev", catalog)
    rep = check_fit(dev, model_config("smollm2-1.7b"), "bp", 1, 8, model_name="smollm2-1.7b")
    assert not rep.fits and rep.alternatives == ()
    assert "Nothing smaller fits either" in rep.message()


def test_profile_runtime_overhead_is_used() -> None:
    jetson = get_profile("jetson-orin-nano-8gb")
    rep = check_fit(jetson, model_config("tiny-llama"), "zo", 1, 8)
    assert rep.breakdown.runtime_overhead == 600_000_000


def test_checkpointing_is_suggested_when_it_makes_backprop_fit() -> None:
    pi = get_profile("rpi5-2gb")
    cfg = model_config("smollm2-135m")
    rep = check_fit(pi, cfg, "bp", 8, 64, "full", model_name="smollm2-135m", optimizer="adam")
    assert not rep.fits
    (alt,) = [a for a in rep.alternatives if "checkpointing" in a]
    assert alt.startswith("BP with LoRA and activation checkpointing")
    needed = estimate_memory(cfg, "bp", batch=8, seq=64, peft="lora", optimizer="adam", checkpoint_fraction=1.0).total
    assert needed <= pi.memory_budget and f"({format_bytes(needed)})" in alt
    ckpt = check_fit(pi, cfg, "bp", 8, 64, "lora", model_name="smollm2-135m", optimizer="adam",
                     checkpoint_fraction=1.0)
    assert ckpt.fits and ckpt.breakdown.total == needed
