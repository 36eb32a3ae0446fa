"""The federation bench reports its keys and meets the uplink target."""

from __future__ import annotations

from fedzo.bench.federation import format_report, run_bench


def test_bench_keys_and_uplink_target() -> None:
    r = run_bench(numel=20_000)
    assert r["uplink_bytes_per_client_round"] <= 200
    assert r["fedavg_smollm2_upload_bytes"] == 134_515_008 * 4
    assert r["server_time_ratio_1000_vs_10"] > 0
    assert "target <= 1.2" in format_report(r)
    assert r["regeneration_seconds"] > 0 and r["replay_over_regenerations"] > 0
    assert r["generation_seconds"] > 0
    assert r["replay_over_generations"] == r["server_aggregate_replay_seconds_10"] / (r["k"] * r["generation_seconds"])
    assert "replay of K entries over K regenerations" in format_report(r)
    assert "generations alone" in format_report(r)


def test_large_replays_compile_the_portable_generator_and_stay_bitwise() -> None:
    """Above the threshold the server, a client's catch-up and a rebuild compile the portable
    generator; the entries they replay land on the same bits as eager replay."""
    import torch

    from fedzo.zo import NoiseSpec, ParamSet, Perturber
    from fedzo.zo.perturb import COMPILED_REPLAY_MIN_ELEMENTS, replay_compiled

    spec = NoiseSpec("portable", "gaussian", 4096)
    assert replay_compiled(spec, COMPILED_REPLAY_MIN_ELEMENTS) and not replay_compiled(spec, 1 << 20)
    assert not replay_compiled(NoiseSpec("torch", "gaussian"), COMPILED_REPLAY_MIN_ELEMENTS)
    start = torch.randn(3 * 4096 + 5, generator=torch.Generator().manual_seed(0))
    out = []
    for compiled in (False, True):
        params = ParamSet.from_tensors({"w": start.clone()})
        p = Perturber(params, spec, compiled=compiled)
        for seed, alphas in ((11, (1e-3, -2e-3, 1e-3 - 1e-4)), (12, (5e-5,))):
            p.apply(seed, alphas)
        out.append(params.tensors[0])
    assert torch.equal(out[0], out[1])
