"""Directions: determinism, independence, portability, chunk invariance."""

import subprocess
import sys

import pytest
import torch

from fedzo.errors import ConfigError
from fedzo.zo import NoiseSpec, ParamSet, Perturber, derive_seed

SPECS = [(g, d) for g in ("portable", "torch") for d in ("gaussian", "rademacher")]


def _params() -> ParamSet:
    return ParamSet.from_tensors({"a": torch.zeros(3000), "b": torch.zeros(17, 5), "c": torch.zeros(1)})


@pytest.mark.parametrize("gen,dist", SPECS)
def test_same_seed_same_direction_and_different_seeds_differ(gen: str, dist: str) -> None:
    p = Perturber(_params(), NoiseSpec(gen, dist, chunk_size=1024))
    d1, d2, d3 = p.direction(11), p.direction(11), p.direction(12)
    assert all(torch.equal(a, b) for a, b in zip(d1, d2, strict=True))
    flat1 = torch.cat([t.view(-1) for t in d1])
    flat3 = torch.cat([t.view(-1) for t in d3])
    assert not torch.equal(flat1, flat3)
    # independent directions are nearly orthogonal: |cos| ~ 1/sqrt(n) ~ 0.018 here
    cos = torch.dot(flat1, flat3) / (flat1.norm() * flat3.norm())
    assert abs(cos.item()) < 0.1
    # unit variance, zero mean (n = 3086: tolerances are ~5 standard errors)
    assert abs(flat1.mean().item()) < 0.1 and abs(flat1.var().item() - 1) < 0.15


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_portable_is_chunk_size_invariant(dist: str) -> None:
    a = Perturber(_params(), NoiseSpec("portable", dist, chunk_size=1024)).direction(5)
    b = Perturber(_params(), NoiseSpec("portable", dist, chunk_size=2048)).direction(5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _digest_in_subprocess(dist: str) -> str:
    code = (
        "import torch, hashlib\n"
        "from fedzo.zo import NoiseSpec, ParamSet, Perturber\n"
        "ps = ParamSet.from_tensors({'a': torch.zeros(3000), 'b': torch.zeros(17, 5)})\n"
        f"d = Perturber(ps, NoiseSpec('portable', '{dist}', chunk_size=1024)).direction(77)\n"
        "print(hashlib.sha256(b''.join(t.numpy().tobytes() for t in d)).hexdigest())\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_portable_identical_across_processes(dist: str) -> None:
    assert _digest_in_subprocess(dist) == _digest_in_subprocess(dist)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_portable_identical_on_cpu_and_cuda(dist: str) -> None:
    cpu = Perturber(_params(), NoiseSpec("portable", dist, chunk_size=1024)).direction(3)
    gpu_params = ParamSet.from_tensors({n: t.cuda() for n, t in zip(_params().names, _params().tensors, strict=True)})
    gpu = Perturber(gpu_params, NoiseSpec("portable", dist, chunk_size=1024)).direction(3)
    # integer hashing and a table lookup: bitwise equal, not just within rounding
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu, strict=True))


def test_compiled_portable_equals_eager() -> None:
    eager = Perturber(_params(), NoiseSpec("portable", "gaussian", chunk_size=1024)).direction(9)
    comp = Perturber(_params(), NoiseSpec("portable", "gaussian", chunk_size=1024), compiled=True).direction(9)
    assert all(torch.equal(a, b) for a, b in zip(eager, comp, strict=True))


def test_derive_seed_range_and_order() -> None:
    s = derive_seed(123, 1, 2)
    assert 0 <= s < 2**63 and s != derive_seed(123, 2, 1) and s == derive_seed(123, 1, 2)
    with pytest.raises(ValueError):
        derive_seed(-1)


@pytest.mark.parametrize("bad", [{"generator": "mt"}, {"distribution": "uniform"}, {"chunk_size": 100}])
def test_bad_noise_spec_names_value(bad: dict) -> None:
    with pytest.raises(ConfigError) as err:
        NoiseSpec(**bad)
    assert repr(next(iter(bad.values()))) in str(err.value)


def test_a_compiled_kernel_that_fails_falls_back_to_the_same_eager_bits(monkeypatch) -> None:
    """torch.compile compiles on first call: a machine without a C compiler fails there, and the
    fill then goes eager for good (replays of large sets compile by default)."""
    from fedzo.zo import cpu_lanes, noise

    def broken(*args):
        raise RuntimeError("no C compiler")

    monkeypatch.setitem(cpu_lanes._KERNELS, ("fill", True, 0), broken)  # the CPU's kernel
    spec = NoiseSpec("portable", "gaussian", chunk_size=1024)
    got = noise.DirectionStream(spec, 5, compiled=True).fill(0, 0, torch.empty(1024))
    assert cpu_lanes._KERNELS[("fill", True, 0)] is None
    assert torch.equal(got, noise.DirectionStream(spec, 5).fill(0, 0, torch.empty(1024)))


@pytest.mark.parametrize("gen,dist", SPECS)
def test_shared_directions_give_every_reader_the_same_bits(gen: str, dist: str) -> None:
    """Perturbers reading a shared store move their parameters exactly as generating alone
    would; portable chunks are generated once (up to the store's cap), torch streams by every reader."""
    from fedzo.zo.shared_directions import SharedDirections

    spec = NoiseSpec(gen, dist, chunk_size=1024)
    alone = Perturber(_params(), spec)
    shared = SharedDirections(max_bytes=4 * 3000)  # room for tensor a's first chunks, not all
    readers = [Perturber(_params(), spec, shared=shared) for _ in range(3)]
    for seed, alphas in [(5, (1e-3,)), (5, (-2e-3,)), (9, (0.5, -0.25))]:
        alone.apply(seed, alphas)
        for r in readers:
            r.apply(seed, alphas)
    for r in readers:
        assert all(torch.equal(a, b) for a, b in zip(alone.params.tensors, r.params.tensors, strict=True))
    reads = 3 * 3 * 5  # three moves by three readers, 5 chunks each: a (3), b (1), c (1)
    if gen == "portable":  # seed 5's chunks of a fill the cap: 3 generated, read 6 times each
        assert (shared.bytes, shared.generated, shared.copied) == (12000, reads - 15, 15)
    else:  # every reader consumes its own stream: the store is not used
        assert (shared.bytes, shared.generated, shared.copied) == (0, 0, 0)
