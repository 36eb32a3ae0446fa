"""Device speed ratios and their chains of sources."""

from __future__ import annotations

import pytest

from fedzo.calibration.model import Calibration, Host
from fedzo.devices.profiles import DeviceProfile, load_profiles
from fedzo.devices.speed import HOST_FLOPS_FP32, speed_of
from fedzo.errors import ConfigError

CAL = Calibration(host=Host(description="t", cpu="c", cores=2, threads=2, torch="2",
                            benchmarks={"gemm-fp32": 100e9, "gemm-fp64": 80e9}), regen_seconds_per_element=1e-9,
                  groups=[])


def _profile(name: str, **speed: object) -> DeviceProfile:
    return DeviceProfile.model_validate({"name": name, "memory_budget": "1GB", "flops_fp32": 1e10,
                                         "uplink_bps": 1e6, "downlink_bps": 1e6, "latency_s": 0.0,
                                         **({"speed": {"source": "a paper", **speed}} if speed else {})})


def test_benchmark_and_relative_chains() -> None:
    board = _profile("board", basis="benchmark", benchmark="gemm-fp64", score=20e9)
    phone = _profile("phone", basis="relative", relative_to="board", benchmark="gb6", score=3000, other_score=1500)
    catalog = {"board": board, "phone": phone}
    b = speed_of(board, catalog, CAL)
    assert b.ratio == pytest.approx(4.0) and b.basis == "benchmark"  # 80 / 20 GFLOP/s: 4x slower
    p = speed_of(phone, catalog, CAL)
    assert p.ratio == pytest.approx(2.0) and p.basis == "relative"  # twice the board's score
    assert len(p.chain) == 3 and "a paper" in p.chain[0] and "measured by fedzo calibrate" in p.chain[-1]


def test_without_a_calibration_flops_are_an_estimate() -> None:
    board = _profile("board", basis="benchmark", benchmark="gemm-fp64", score=20e9)
    f = speed_of(board, {"board": board}, None)
    assert f.basis == "estimate" and f.ratio == pytest.approx(HOST_FLOPS_FP32 / 1e10)


def test_bad_speed_blocks_are_named() -> None:
    with pytest.raises(ValueError, match="basis 'relative' needs relative_to, other_score"):
        _profile("x", basis="relative", benchmark="gb6", score=1)
    odd = _profile("odd", basis="benchmark", benchmark="linpack-fp16", score=1e9)
    with pytest.raises(ConfigError, match="benchmark 'linpack-fp16', which the calibration's host did not measure"):
        speed_of(odd, {"odd": odd}, CAL)
    lost = _profile("lost", basis="relative", relative_to="nowhere", benchmark="gb6", score=1, other_score=1)
    with pytest.raises(ConfigError, match="relative_to 'nowhere' is not a profile"):
        speed_of(lost, {"lost": lost}, CAL)


def test_every_shipped_profile_states_its_speed_with_a_source() -> None:
    catalog = load_profiles()
    for name, p in catalog.items():
        assert p.speed is not None, f"{name} has no speed block"
        f = speed_of(p, catalog, CAL)
        assert f.ratio > 0 and f.chain


def test_half_precision_scales_a_measured_chain_by_the_profiles_rates() -> None:
    """The calibration times the host in fp32, so a bf16 run scales the device's fp32 figure
    by its own fp32/bf16 rates, and says it is an estimate; without a bf16 rate it is priced
    as fp32, and says that too."""
    fast = DeviceProfile.model_validate({"name": "gpu", "memory_budget": "1GB", "flops_fp32": 1e12,
                                         "flops_bf16": 8e12, "uplink_bps": 1e6, "downlink_bps": 1e6,
                                         "latency_s": 0.0, "speed": {"source": "s", "basis": "benchmark",
                                                                     "benchmark": "gemm-fp32", "score": 400e9}})
    plain = _profile("board", basis="benchmark", benchmark="gemm-fp64", score=20e9)
    catalog = {"gpu": fast, "board": plain}
    fp32, bf16 = speed_of(fast, catalog, CAL), speed_of(fast, catalog, CAL, "bf16")
    assert fp32.basis == "benchmark" and fp32.ratio == pytest.approx(0.25)
    assert bf16.basis == "estimate" and bf16.ratio == pytest.approx(0.25 / 8)
    assert bf16.chain[:-1] == fp32.chain and "bf16 at 8e+12 against fp32 at 1e+12" in bf16.chain[-1]
    same = speed_of(plain, catalog, CAL, "bf16")
    assert same.ratio == pytest.approx(4.0) and "bf16 priced at its fp32 speed (an estimate)" in same.chain[-1]
    # known by its FLOP/s alone: its bf16 rate against the host's assumed rate
    assert speed_of(fast, catalog, None, "bf16").ratio == pytest.approx(HOST_FLOPS_FP32 / 8e12)
    with pytest.raises(ConfigError, match="dtype: 'fp8'"):
        speed_of(fast, catalog, CAL, "fp8")
