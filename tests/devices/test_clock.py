"""Round clock: hand-computed arithmetic; deadline, over-commit, availability; determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fedzo.devices.clock import ClientTiming, ClientWork, Clock, ModelShape, simulate_round, transfer_seconds
from fedzo.devices.dims import ArchDims
from fedzo.devices.profiles import DeviceProfile, get_profile
from fedzo.devices.work import Tuning, forward_flops

ARCH = ArchDims(kind="decoder", layers=2, hidden=8, intermediate=16, heads=2, kv_heads=2, head_dim=4, vocab=10,
                tied=True, max_positions=64, type_vocab=0, num_labels=2, eager_attention=False)
TRAINABLE = 1_000_000


def _shape(method: str = "zo", q: int = 2) -> ModelShape:
    tuning = Tuning(method, forwards_per_step=2 * q, regenerations_per_step=3 * q)  # type: ignore[arg-type]
    return ModelShape(model="m", config=None, arch=ARCH, tuning=tuning, n_params=TRAINABLE, trainable=TRAINABLE,
                      trainable_bytes=4 * TRAINABLE, batch=4, seq=25, dtype="fp32")


def _clock(profiles: list[DeviceProfile], seed: int = 0, method: str = "zo") -> Clock:
    return Clock(profiles, _shape(method), seed=seed)

# dev: downlink 16 Mbit/s, uplink 8 Mbit/s, latency 0.5 s, 1 GFLOP/s (see conftest.VALID)


def test_transfer_by_hand() -> None:
    assert transfer_seconds(2e6, 16e6, 0.5) == pytest.approx(1.5)  # 16 Mbit / 16 Mbit/s + 0.5


def test_client_timing_by_hand(catalog: Path) -> None:
    dev = get_profile("dev", catalog)
    clock = _clock([dev])
    batches = ((4, 25),) * 10
    # 10 steps x (2q = 4 forwards + 3q = 6 regenerations of 1e6 elements at 20 FLOP each) at 1 GFLOP/s
    compute = 10 * (4 * forward_flops(ARCH, 4, 25) + 6 * TRAINABLE * 20.0) / 1e9
    assert clock.modelled_compute_seconds(0, batches) == pytest.approx(compute)
    # 5 entries x 1e6 elements x 20 FLOP / 1e9 FLOP/s = 0.1 s
    assert clock.regen_seconds(0, 5) == pytest.approx(0.1)
    t = clock.timing(0, ClientWork(down_bytes=2_000_000, up_bytes=1_000_000, catch_up_entries=5, batches=batches))
    assert (t.download_s, t.replay_s, t.compute_s, t.upload_s) == pytest.approx((1.5, 0.1, compute, 1.5))
    r = simulate_round([t], start=100.0)
    (tl,) = r.timelines
    assert (tl.download_end, tl.replay_end, tl.compute_end, tl.upload_end) == pytest.approx(
        (101.5, 101.6, 101.6 + compute, 103.1 + compute)
    )
    assert tl.status == "ok" and r.duration == pytest.approx(3.1 + compute)


def test_measured_host_seconds_times_speed_ratio(catalog: Path) -> None:
    dev = get_profile("dev", catalog).model_copy(update={"speed_ratio": 3.0})
    clock = Clock([dev], _shape(), seed=0, compute_model="measured")
    t = clock.timing(0, ClientWork(0, 0, catch_up_entries=5, batches=((4, 25),), host_seconds=2.0))
    assert t.compute_s == pytest.approx(6.0)  # 2 s measured on the host x 3
    assert t.replay_s == 0.0  # the host measurement already includes the catch-up


def test_a_changed_clock_input_changes_the_time_the_expected_way(catalog: Path) -> None:
    dev = get_profile("dev", catalog)

    def compute(clock: Clock, batches: tuple[tuple[int, int], ...]) -> float:
        return clock.timing(0, ClientWork(1000, 1000, batches=batches)).compute_s

    base = compute(_clock([dev]), ((4, 25),) * 2)
    assert compute(_clock([dev]), ((4, 25),) * 4) == pytest.approx(2 * base)  # twice the steps
    assert compute(_clock([dev]), ((8, 25),) * 2) > base  # more rows
    assert compute(_clock([dev]), ((4, 50),) * 2) > compute(_clock([dev]), ((8, 25),) * 2)  # attention grows with width
    fast = dev.model_copy(update={"flops_fp32": 2e9})
    assert compute(_clock([fast]), ((4, 25),) * 2) == pytest.approx(base / 2)
    # BP, full: a forward, input and weight gradients, and the SGD update, at 1 GFLOP/s
    bp = compute(_clock([dev], method="bp"), ((8, 25),))
    assert bp == pytest.approx((3 * forward_flops(ARCH, 8, 25) + 2 * TRAINABLE) / 1e9)


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


def test_offline_at_start_agrees_with_the_full_draw_whatever_the_work() -> None:
    # the engine asks before pricing any work: the answer must be the one offline_at gives at the start
    flaky = _clock(_fleet(40, 0.6, 0.3), seed=7)
    nightly = _clock([get_profile("phone-flagship")])
    cases = [(flaky, i, 50.0) for i in range(40)] + [(nightly, 0, s) for s in (3600.0, 23400.0, 43200.0, 84600.0)]
    seen = set()
    for clock, client, start in cases:
        got = clock.offline_at_start(client, round_=3, attempt=1, start=start)
        for work in (0.5, 7.0, 3600.0):
            off = clock.offline_at(client, _t("c", work), round_=3, attempt=1, start=start)
            assert got == (off is not None and off <= start), (client, start, work)
        seen.add(got)
    assert seen == {True, False}


def test_a_calibrated_fedavg_client_round_adds_its_round_price_once(catalog: Path) -> None:
    from fedzo.calibration.model import Calibration, Host, Point, fit_group

    g = fit_group("m", "bp", "full", False, [Point(rows=4, width=w, seconds=0.01 * w, flops=1e9 * w, regen_elements=0)
                                             for w in (8, 16)], 1e-9)
    cal = Calibration(host=Host(description="t", cpu="c", cores=2, threads=2, torch="2"), regen_seconds_per_element=1e-9,
                      groups=[g], update_seconds_per_element={"sgd": 1e-10, "momentum": 2e-10, "adam": 3e-9},
                      round_seconds_per_element={"sgd": 5e-9, "momentum": 6e-9, "adam": 8e-9})
    dev = get_profile("dev", catalog).model_copy(update={"speed_ratio": 2.0})
    shape = replace(_shape("bp"), tuning=Tuning("bp", optimizer="adam"))
    clock = Clock([dev], shape, seed=0, calibration=cal, calibration_source="t.json")
    steps = [cal.step_seconds(g, clock.step_work(b)) for b in ((4, 8), (4, 16))]
    expected = (sum(steps) + 8e-9 * TRAINABLE) * 2.0
    assert clock.modelled_compute_seconds(0, ((4, 8), (4, 16))) == pytest.approx(expected)
    zo = Clock([dev], _shape("zo"), seed=0)  # a ZO client-round has no arrays to load: steps only
    assert zo.modelled_compute_seconds(0, ()) == 0.0
