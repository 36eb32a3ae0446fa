"""The federation bench reports its keys and meets the uplink target."""

from __future__ import annotations

from fedzo.bench.federation import format_report, run_bench


def test_bench_keys_and_uplink_target() -> None:
    r = run_bench(numel=20_000)
    assert r["uplink_bytes_per_client_round"] <= 200
    assert r["fedavg_smollm2_upload_bytes"] == 134_515_008 * 4
    assert r["server_time_ratio_1000_vs_10"] > 0
    assert "target <= 1.2" in format_report(r)
