"""Round clock: hand-computed arithmetic; deadline, over-commit, availability; determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedzo.devices.clock import (
    ClientTiming,
    client_timing,
    forward_flops,
    replay_seconds,
    simulate_round,
    transfer_seconds,
    with_availability,
    zo_compute_seconds,
)
from fedzo.devices.profiles import DeviceProfile, get_profile

# dev: downlink 16 Mbit/s, uplink 8 Mbit/s, latency 0.5 s, 1 GFLOP/s (see conftest.VALID)


def test_transfer_and_flops_by_hand() -> None:
    assert transfer_seconds(2e6, 16e6, 0.5) == pytest.approx(1.5)  # 16 Mbit / 16 Mbit/s + 0.5
    assert forward_flops(1_000_000, 100) == 2e8


def test_client_timing_by_hand(catalog: Path) -> None:
    dev = get_profile("dev", catalog)
    # 10 steps x 2q=4 forwards x 2*1e6*100 FLOP = 8e9 FLOP at 1e9 FLOP/s = 8 s
    compute = zo_compute_seconds(dev, n_params=1_000_000, batch=4, seq=25, q=2, local_steps=10)
    assert compute == pytest.approx(8.0)
    # 5 entries x 1e6 params x 20 FLOP / 1e9 FLOP/s = 0.1 s
    assert replay_seconds(dev, entries=5, trainable_params=1_000_000) == pytest.approx(0.1)
    t = client_timing(dev, "a", down_bytes=2e6, up_bytes=1e6, compute_s=compute,
                      replay_entries=5, trainable_params=1_000_000)
    assert (t.download_s, t.upload_s) == pytest.approx((1.5, 1.5))
    r = simulate_round([t], start=100.0)
    (tl,) = r.timelines
    assert (tl.download_end, tl.replay_end, tl.compute_end, tl.upload_end) == pytest.approx(
        (101.5, 101.6, 109.6, 111.1)
    )
    assert tl.status == "ok" and r.duration == pytest.approx(11.1)


def test_measured_host_seconds_times_speed_ratio(catalog: Path) -> None:
    dev = get_profile("dev", catalog).model_copy(update={"speed_ratio": 3.0})
    s = zo_compute_seconds(dev, n_params=1, batch=1, seq=1, local_steps=4, host_step_seconds=0.5)
    assert s == pytest.approx(6.0)  # 4 steps x 0.5 s on the host x 3


def _t(cid: str, compute: float, offline_at: float | None = None) -> ClientTiming:
    return ClientTiming(cid, download_s=1.0, replay_s=0.0, compute_s=compute, upload_s=1.0,
                        offline_at=offline_at)


def test_synchronous_round_ends_at_slowest() -> None:
    r = simulate_round([_t("a", 3.0), _t("b", 8.0), _t("c", 5.0)])
    assert r.kept == ("a", "b", "c") and r.duration == pytest.approx(10.0)


def test_deadline_drops_late_clients_and_round_lasts_until_deadline() -> None:
    r = simulate_round([_t("a", 3.0), _t("b", 8.0), _t("c", 5.0)], deadline=9.0)
    assert {t.client_id: t.status for t in r.timelines} == {"a": "ok", "b": "late", "c": "ok"}
    assert r.duration == pytest.approx(9.0)


def test_overcommit_keeps_first_k_to_finish() -> None:
    r = simulate_round([_t("a", 3.0), _t("b", 8.0), _t("c", 5.0), _t("d", 3.0)], keep=2)
    assert sorted(r.kept) == ["a", "d"]  # a and d tie at 5 s: both kept, by finish then id
    assert {t.status for t in r.timelines if t.client_id in "bc"} == {"dropped"}
    assert r.duration == pytest.approx(5.0)


def test_overcommit_with_too_few_finishers_waits_for_everyone() -> None:
    r = simulate_round([_t("a", 3.0), _t("b", 8.0, offline_at=4.0)], keep=2)
    assert r.kept == ("a",) and r.duration == pytest.approx(5.0)


def test_offline_mid_round_is_dropped_at_that_moment() -> None:
    r = simulate_round([_t("a", 3.0), _t("b", 8.0, offline_at=6.5)])
    b = r.timelines[1]
    assert b.status == "offline" and b.end == pytest.approx(6.5)
    assert r.kept == ("a",) and r.duration == pytest.approx(6.5)


def _fleet(n: int, p: float, dropout: float) -> list[DeviceProfile]:
    base = DeviceProfile(name="flaky", memory_budget=1, flops_fp32=1.0, uplink_bps=1.0,
                         downlink_bps=1.0, latency_s=0.0,
                         availability={"kind": "bernoulli", "p": p, "dropout": dropout})
    return [base] * n


def test_bernoulli_availability_is_deterministic_and_order_independent() -> None:
    timings = [_t(f"c{i}", float(i % 7)) for i in range(40)]
    profiles = _fleet(40, 0.6, 0.3)
    a = with_availability(timings, profiles, seed=7, round_idx=3, start=50.0)
    b = with_availability(timings, profiles, seed=7, round_idx=3, start=50.0)
    assert a == b
    rev = with_availability(timings[::-1], profiles, seed=7, round_idx=3, start=50.0,
                            client_indices=list(range(39, -1, -1)))
    assert rev[::-1] == a
    offline = [t for t in a if t.offline_at is not None]
    assert 0 < len(offline) < 40
    assert all(50.0 <= t.offline_at <= 50.0 + t.work_s for t in offline)  # type: ignore[operator]
    other = with_availability(timings, profiles, seed=8, round_idx=3, start=50.0)
    assert other != a
    r1 = simulate_round(a, deadline=6.0, keep=10, start=50.0)
    r2 = simulate_round(b, deadline=6.0, keep=10, start=50.0)
    assert r1 == r2


def test_trace_availability_drops_client_leaving_its_window() -> None:
    phone = get_profile("phone-flagship")  # online 23:00-07:00 daily (traces/nightly.yaml)
    t = [_t("p", 3600.0)]  # 3602 s of work
    at_night = with_availability(t, [phone], seed=0, round_idx=0, start=3600.0)
    assert at_night[0].offline_at is None
    leaving = with_availability(t, [phone], seed=0, round_idx=0, start=25200.0 - 1800.0)
    assert leaving[0].offline_at == pytest.approx(25200.0)
    daytime = with_availability(t, [phone], seed=0, round_idx=0, start=43200.0)
    assert daytime[0].offline_at == pytest.approx(43200.0)
    r = simulate_round(leaving, start=23400.0)
    assert r.timelines[0].status == "offline"
    # Across midnight the window continues (23:00 -> 07:00 next day).
    midnight = with_availability(t, [phone], seed=0, round_idx=0, start=86400.0 - 1800.0)
    assert midnight[0].offline_at is None
