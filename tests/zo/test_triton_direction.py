"""The fused Triton direction kernel against the portable generator's known answers, run
under Triton's interpreter on a CPU (``-m gpu`` runs it compiled on a GPU).

The kernel's ``z`` must be bitwise the CPU generator's. Its update ``w + a z`` is a fused
multiply-add, as torch's vectorised CPU and CUDA kernels compute it; the interpreter rounds
a fused multiply-add twice, so under it the update is checked to one unit in the last place.
"""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from fedzo.zo import NoiseSpec, ParamSet, Perturber
from fedzo.zo.known_answers import VECTORS

if not torch.cuda.is_available():  # Triton reads it when it defines and launches kernels: they run on the CPU
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
from fedzo.zo.triton_direction import apply_fused

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _bits(values: torch.Tensor) -> str:
    return "".join(struct.pack(">f", v).hex() for v in values.tolist())


def test_the_kernel_regenerates_every_known_answer_bitwise() -> None:
    chunks = json.loads(VECTORS.read_text(encoding="utf-8"))["chunks"]
    for c in chunks:
        z = torch.zeros(c["n"], dtype=torch.float32, device=DEVICE)
        apply_fused([z], c["seed"], (1.0,), gaussian=c["distribution"] == "gaussian", indices=[c["tensor"]],
                    start=c["start"])  # 0 + 1 x z: exactly z
        assert _bits(z.cpu()) == c["float32_bits"], f"{c['distribution']} seed {c['seed']} start {c['start']}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_the_fused_update_is_the_perturbers_in_every_dtype(dtype: torch.dtype, distribution: str) -> None:
    """A step's three alphas applied in one pass, entry after entry, as the CPU Perturber
    applies them: the directions bitwise, the weights within one unit in the last place;
    bitwise in half precision, where each alpha is rounded to the weights' dtype as ``add_``'s
    vectorised loop rounds it, on a tensor whose length 32 divides (its scalar tail keeps the
    alpha a float32: :mod:`fedzo.zo.cpu_lanes`). Float32 weights differ only under the interpreter,
    whose ``fma`` rounds the product first (a GPU's does not)."""
    g = torch.Generator().manual_seed(0)
    sizes = (3072, 70, 1)
    weights = [torch.randn(n, generator=g).to(dtype) for n in sizes]
    alphas = (1e-3, -2e-3, 0.51)  # 0.51 rounds differently in bf16 and fp16
    ref = [w.clone() for w in weights]
    names = {f"t{i}": t for i, t in enumerate(ref)}
    perturber = Perturber(ParamSet.from_tensors(names), NoiseSpec("portable", distribution))
    perturber.apply(12345, alphas)
    fused = [w.to(DEVICE) for w in weights]
    apply_fused(fused, 12345, alphas, gaussian=distribution == "gaussian")
    for got, want in zip(fused, ref, strict=True):
        got = got.cpu()
        assert got.dtype == dtype
        ulp = torch.finfo(dtype).eps * want.float().abs().clamp(min=1.0)
        assert ((got.float() - want.float()).abs() <= ulp).all()
    if dtype != torch.float32:
        assert torch.equal(fused[0].cpu(), ref[0])
    zero = [torch.zeros(n, dtype=dtype, device=DEVICE) for n in sizes]
    apply_fused(zero, 7, (1.0,), gaussian=distribution == "gaussian")
    for got, want in zip(zero, perturber.direction(7), strict=True):
        assert torch.equal(got.cpu(), want.to(dtype))  # z in the weights' dtype, rounded to nearest even


def test_no_alphas_change_nothing_and_a_strided_tensor_is_refused() -> None:
    w = torch.ones(64, device=DEVICE)
    apply_fused([w], 1, ())
    assert torch.equal(w, torch.ones(64, device=DEVICE))
    with pytest.raises(ValueError, match="contiguous"):
        apply_fused([torch.ones(8, 8, device=DEVICE).t()], 1, (1.0,))


def test_a_perturber_asked_for_the_fused_kernel_steps_as_the_chunked_one() -> None:
    """Three ZO-SGD passes through ``Perturber(fused=True)``: the kernel serves them, and the
    weights end within one unit in the last place of the chunked path's; a mask or a per-chunk
    hook keeps the chunked path."""
    from fedzo.zo import EstimatorConfig, make_zo_optimizer, zo_step
    from fedzo.zo.masks import make_mask

    g = torch.Generator().manual_seed(1)
    base = {"a": torch.randn(500, generator=g), "b": torch.randn(3, 7, generator=g)}
    results = []
    for fused in (False, True):
        params = ParamSet.from_tensors({k: v.clone().to(DEVICE) for k, v in base.items()})
        perturber = Perturber(params, NoiseSpec("portable", "gaussian"), fused=fused)
        target = [t.clone() for t in params.tensors]

        def loss(params: ParamSet = params, target: list[torch.Tensor] = target) -> float:
            return float(sum(((t - w) ** 2).sum() for t, w in zip(params.tensors, target, strict=True)))

        zo_step(perturber, loss, 99, EstimatorConfig("central", 1e-3, 1), make_zo_optimizer("zo-sgd"), 1e-2)
        assert perturber._use_fused(None) is fused
        results.append([t.cpu() for t in params.tensors])
    for chunked, fused_ in zip(*results, strict=True):
        assert ((chunked - fused_).abs() <= torch.finfo(torch.float32).eps * chunked.abs().clamp(min=1.0)).all()
    params = ParamSet.from_tensors({k: v.clone() for k, v in base.items()})
    masked = Perturber(params, NoiseSpec("portable", "gaussian"), fused=True,
                       mask=make_mask("random", 0.5, 0, params))
    assert not masked._use_fused(None)
    assert not Perturber(params, NoiseSpec("portable", "gaussian"), fused=True)._use_fused(lambda *a: None)


def test_one_launch_serves_every_tensor_of_a_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors of two dtypes: one launch per dtype (a segment table finds each block's
    tensor; each tensor's stream key is derived in the kernel), the same values as the
    Perturber's directions, and the table built once per set of tensors."""
    from fedzo.zo import triton_direction as td

    launches: list[int] = []
    real = td._apply_kernel

    class Counting:
        def __getitem__(self, grid: tuple[int]) -> object:
            launches.append(grid[0])
            return real[grid]

    monkeypatch.setattr(td, "_apply_kernel", Counting())
    sizes = (2500, 1, 1024, 3)
    dtypes = (torch.float32, torch.bfloat16, torch.float32, torch.bfloat16)
    zero = [torch.zeros(n, dtype=d, device=DEVICE) for n, d in zip(sizes, dtypes, strict=True)]
    apply_fused(zero, 99, (1.0,), indices=[4, 0, 7, 2])
    assert launches == [3 + 1, 1 + 1]  # blocks of 1024: the float32 tensors, then the bfloat16 ones
    for got, index in zip(zero, [4, 0, 7, 2], strict=True):  # the Perturber's direction of tensor ``index``
        names = {f"t{i}": torch.zeros(got.numel() if i == index else 1) for i in range(8)}
        want = Perturber(ParamSet.from_tensors(names), NoiseSpec("portable")).direction(99)[index]
        assert torch.equal(got.cpu(), want.to(got.dtype))
    assert td.segments([zero[0], zero[2]], [4, 7]) is td.segments([zero[0], zero[2]], [4, 7])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_replay_in_one_pass_is_bitwise_the_entries_applied_one_by_one(dtype: torch.dtype) -> None:
    """K log entries (one to three alphas each) in one pass over the weights: each element
    moved entry after entry, rounded after each alpha, as one application per entry."""
    from fedzo.zo import LogEntry
    from fedzo.zo.replay import apply_entries
    from fedzo.zo.triton_direction import apply_entries_fused

    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(n, generator=g).to(dtype).to(DEVICE) for n in (2100, 5, 1)]
    entries = [(11, (1e-3,)), (12, (-2e-3, 5e-4)), (13, ()), (14, (0.25, -0.125, 3e-3)), (15, (7e-4,))]
    one_by_one = [w.clone() for w in weights]
    for seed, alphas in entries:
        apply_fused(one_by_one, seed, alphas, indices=[3, 4, 5])
    one_pass = [w.clone() for w in weights]
    apply_entries_fused(one_pass, entries, indices=[3, 4, 5])
    assert all(torch.equal(a, b) for a, b in zip(one_pass, one_by_one, strict=True))
    assert not torch.equal(one_pass[0], weights[0])
    # through the Perturber, as a log replay does
    params = ParamSet.from_tensors({f"t{i}": w.clone() for i, w in enumerate(weights)})
    apply_entries(Perturber(params, NoiseSpec("portable"), fused=True),
                  [LogEntry(1, s, tuple(a)) for s, a in entries])
    looped = [w.clone() for w in weights]
    for seed, alphas in entries:
        apply_fused(looped, seed, alphas)
    assert all(torch.equal(a, b) for a, b in zip(params.tensors, looped, strict=True))


def test_a_long_replay_takes_several_passes_and_splits_long_entries() -> None:
    """20 entries, one with five alphas: two passes of 16 rows, bitwise the one-by-one result."""
    from fedzo.zo.triton_direction import ENTRIES_PER_PASS, apply_entries_fused

    entries = [(100 + i, ((-1) ** i * 1e-3 * (i + 1),)) for i in range(20)]
    entries[7] = (107, (1e-3, 2e-3, -3e-3, 4e-3, -5e-3))  # two rows, same seed
    w = torch.randn(1500, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    one_pass, one_by_one = w.clone(), w.clone()
    apply_entries_fused([one_pass], entries, gaussian=False)
    for seed, alphas in entries:
        apply_fused([one_by_one], seed, alphas, gaussian=False)
    assert ENTRIES_PER_PASS == 16 and torch.equal(one_pass, one_by_one)
