"""Round clock: hand-computed arithmetic; deadline, over-commit, availability; determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedzo.devices.clock import (
    ClientTiming,
    ClientWork,
    Clock,
    ModelShape,
    forward_flops,
    replay_seconds,
    simulate_round,
    transfer_seconds,
)
from fedzo.devices.profiles import DeviceProfile, get_profile


def _shape(n_params: int = 1_000_000, batch: int = 4, seq: int = 25, q: int = 2, mode: str = "zo") -> ModelShape:
    return ModelShape(model="m", config=None, n_params=n_params, trainable=n_params, trainable_bytes=4 * n_params,
                      batch=batch, seq=seq, peft="full", lora_rank=8, prefix_tokens=10, dtype="fp32",
                      mode=mode, optimizer="sgd", q=q, forwards_per_step=2 * q)  # type: ignore[arg-type]


def _clock(profiles: list[DeviceProfile], seed: int = 0, **kw: object) -> Clock:
    return Clock(profiles, _shape(**kw), seed=seed)  # type: ignore[arg-type]

# dev: downlink 16 Mbit/s, uplink 8 Mbit/s, latency 0.5 s, 1 GFLOP/s (see conftest.VALID)


def test_transfer_and_flops_by_hand() -> None:
    assert transfer_seconds(2e6, 16e6, 0.5) == pytest.approx(1.5)  # 16 Mbit / 16 Mbit/s + 0.5
    assert forward_flops(1_000_000, 100) == 2e8


def test_client_timing_by_hand(catalog: Path) -> None:
    dev = get_profile("dev", catalog)
    clock = _clock([dev])
    # 10 steps x 2q=4 forwards x 2*1e6*100 FLOP = 8e9 FLOP at 1e9 FLOP/s = 8 s
    compute = clock.modelled_compute_seconds(0, local_steps=10)
    assert compute == pytest.approx(8.0)
    # 5 entries x 1e6 params x 20 FLOP / 1e9 FLOP/s = 0.1 s
    assert replay_seconds(dev, entries=5, trainable_params=1_000_000) == pytest.approx(0.1)
    t = clock.timing(0, ClientWork(down_bytes=2_000_000, up_bytes=1_000_000, catch_up_entries=5, local_steps=10))
    assert (t.download_s, t.replay_s, t.compute_s, t.upload_s) == pytest.approx((1.5, 0.1, 8.0, 1.5))
    r = simulate_round([t], start=100.0)
    (tl,) = r.timelines
    assert (tl.download_end, tl.replay_end, tl.compute_end, tl.upload_end) == pytest.approx(
        (101.5, 101.6, 109.6, 111.1)
    )
    assert tl.status == "ok" and r.duration == pytest.approx(11.1)


def test_measured_host_seconds_times_speed_ratio(catalog: Path) -> None:
    dev = get_profile("dev", catalog).model_copy(update={"speed_ratio": 3.0})
    clock = Clock([dev], _shape(), seed=0, compute_model="measured")
    t = clock.timing(0, ClientWork(0, 0, catch_up_entries=5, local_steps=4, host_seconds=2.0))
    assert t.compute_s == pytest.approx(6.0)  # 2 s measured on the host x 3
    assert t.replay_s == 0.0  # the host measurement already includes the catch-up


def test_a_changed_clock_input_changes_the_time_the_expected_way(catalog: Path) -> None:
    dev = get_profile("dev", catalog)
    base = _clock([dev]).timing(0, ClientWork(1000, 1000, local_steps=2))
    assert _clock([dev], batch=8).timing(0, ClientWork(1000, 1000, local_steps=2)).compute_s == \
        pytest.approx(2 * base.compute_s)  # twice the tokens
    assert _clock([dev]).timing(0, ClientWork(1000, 1000, local_steps=4)).compute_s == pytest.approx(2 * base.compute_s)
    fast = dev.model_copy(update={"flops_fp32": 2e9})
    assert _clock([fast]).timing(0, ClientWork(1000, 1000, local_steps=2)).compute_s == \
        pytest.approx(base.compute_s / 2)
    bp = Clock([dev], _shape(mode="bp"), seed=0).timing(0, ClientWork(1000, 1000, examples=8))
    # BP: 3 forwards' cost over 8 examples x 25 tokens = 3 x 2e6 x 200 / 1e9
    assert bp.compute_s == pytest.approx(1.2)


def test_catch_up_costs_for_the_auto_policy(catalog: Path) -> None:
    dev = get_profile("dev", catalog)
    clock = _clock([dev])
    # 3 entries: 48 B at 16 Mbit/s + 0.5 s latency, plus 3 x 1e6 x 20 FLOP at 1 GFLOP/s
    assert clock.replay_seconds(0, 3) == pytest.approx(48 * 8 / 16e6 + 0.5 + 0.06)
    assert clock.full_seconds(0) == pytest.approx(4e6 * 8 / 16e6 + 0.5)


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


def _available(clock: Clock, timings: list[ClientTiming], order: list[int], start: float) -> list[ClientTiming]:
    out = {i: replace(timings[i], offline_at=clock.offline_at(i, timings[i], round_=3, attempt=0, start=start))
           for i in order}
    return [out[i] for i in range(len(timings))]


def test_bernoulli_availability_is_deterministic_and_order_independent() -> None:
    timings = [_t(f"c{i}", float(i % 7)) for i in range(40)]
    clock = _clock(_fleet(40, 0.6, 0.3), seed=7)
    a = _available(clock, timings, list(range(40)), 50.0)
    b = _available(clock, timings, list(range(40)), 50.0)
    assert a == b
    assert _available(clock, timings, list(range(39, -1, -1)), 50.0) == a
    offline = [t for t in a if t.offline_at is not None]
    assert 0 < len(offline) < 40
    assert all(50.0 <= t.offline_at <= 50.0 + t.work_s for t in offline)  # type: ignore[operator]
    other = _available(_clock(_fleet(40, 0.6, 0.3), seed=8), timings, list(range(40)), 50.0)
    assert other != a
    r1 = simulate_round(a, deadline=6.0, keep=10, start=50.0)
    r2 = simulate_round(b, deadline=6.0, keep=10, start=50.0)
    assert r1 == r2


def test_trace_availability_drops_client_leaving_its_window() -> None:
    phone = get_profile("phone-flagship")  # online 23:00-07:00 daily (traces/nightly.yaml)
    clock = _clock([phone])
    t = _t("p", 3600.0)  # 3602 s of work

    def off(start: float) -> float | None:
        return clock.offline_at(0, t, round_=0, attempt=0, start=start)

    assert off(3600.0) is None
    assert off(25200.0 - 1800.0) == pytest.approx(25200.0)
    assert off(43200.0) == pytest.approx(43200.0)
    r = simulate_round([replace(t, offline_at=off(23400.0))], start=23400.0)
    assert r.timelines[0].status == "offline"
    # Across midnight the window continues (23:00 -> 07:00 next day).
    assert off(86400.0 - 1800.0) is None
