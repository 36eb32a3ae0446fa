"""The compiled CPU path in 32-bit lanes (:mod:`fedzo.zo.cpu_lanes`): its directions are the
eager generator's and its one-pass update is bitwise the chunked ``add_`` (a fused
multiply-add per alpha), offsets past 2**32 included."""

import pytest
import torch

from fedzo.zo import NoiseSpec, ParamSet, Perturber, cpu_lanes, native_lanes
from fedzo.zo.noise import _portable_fill, gaussian_table, key_words

KEY = 0x1234567890ABCDE
WORDS = key_words(KEY)
TABLE = gaussian_table(torch.device("cpu"))
START = (1 << 32) - 4096  # the counter's high word changes inside the tensor (both groupings)
N = (1 << 20) + 1030  # not a multiple of the vector width


def _weights() -> torch.Tensor:
    """float32 weights over many magnitudes, signed zeros included."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(N, generator=g) * torch.pow(10.0, torch.randint(-8, 3, (N,), generator=g).float())
    w[:64], w[64:128] = 0.0, -0.0
    return w


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


@pytest.fixture(params=["native", "inductor"])
def update_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fused update served by the C kernel (where a compiler is at hand), or by
    torch.compile's kernel as on a host without one."""
    monkeypatch.setattr(cpu_lanes, "_KERNELS", {})
    monkeypatch.setattr(cpu_lanes, "_TABLE_READY", {})
    if request.param == "inductor":
        monkeypatch.setattr(native_lanes, "_LIBRARY", [None])
    return str(request.param)


@pytest.mark.parametrize("gaussian", [True, False])
def test_fill_is_the_eager_generator_across_the_high_word(gaussian: bool) -> None:
    start = START * (1 if gaussian else 32)  # group index crosses 2**32 for both distributions
    want, got = torch.empty(N), torch.empty(N)
    _portable_fill(KEY, start, want, gaussian)
    assert cpu_lanes.fill(WORDS, start, got, TABLE, gaussian)
    assert torch.equal(_bits(got), _bits(want))


@pytest.mark.parametrize("gaussian", [True, False])
def test_fused_update_is_bitwise_the_chunked_add(gaussian: bool, update_path: str) -> None:
    """Several alphas (one pass of three, then one more), every rounding as ``add_``'s FMA."""
    start = START * (1 if gaussian else 32)
    z = torch.empty(N)
    _portable_fill(KEY, start, z, gaussian)
    alphas = (1e-3, -2e-3, 0.7311, 3e-7)
    want, got = _weights(), _weights()
    for a in alphas:
        want.add_(z, alpha=a)
    assert cpu_lanes.apply(WORDS, got, alphas, TABLE, gaussian, start) == len(alphas)
    assert torch.equal(_bits(got), _bits(want))
    served = cpu_lanes._KERNELS[("apply", gaussian, 3)]
    assert (served.__module__ == native_lanes.__name__) == (update_path == "native")


def test_fma_emulation_rounds_once() -> None:
    """The float64 round-to-odd sum is the float32 FMA where two roundings would differ."""
    g = torch.Generator().manual_seed(1)
    w, z = torch.randn(1 << 16, generator=g), torch.randn(1 << 16, generator=g)
    a = torch.tensor(0.7311)
    got = cpu_lanes.fma_float32(z, a, w)
    assert torch.equal(_bits(got), _bits(w.clone().add_(z, alpha=0.7311)))
    assert not torch.equal(got, w + z * a)


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_compiled_perturber_moves_weights_as_the_eager_one(dist: str, update_path: str) -> None:
    """Perturber(compiled=True): the large tensor fused, the small ones chunked; a multi-alpha
    application leaves every tensor bitwise where the eager chunked path does."""
    spec = NoiseSpec("portable", dist, chunk_size=1024)

    def params() -> ParamSet:
        g = torch.Generator().manual_seed(2)
        return ParamSet.from_tensors({"a": torch.randn(5000, generator=g), "b": torch.randn(17, 5, generator=g),
                                      "c": torch.randn(3, 2048, generator=g)})

    eager, comp = params(), params()
    for seed, alphas in ((3, (1e-3,)), (4, (1e-3, -2e-3, 5e-4, -1e-4))):
        Perturber(eager, spec).apply(seed, alphas)
        Perturber(comp, spec, compiled=True).apply(seed, alphas)
    assert all(torch.equal(_bits(x), _bits(y)) for x, y in zip(eager.tensors, comp.tensors, strict=True))


def _three_tensors() -> ParamSet:
    g = torch.Generator().manual_seed(2)
    return ParamSet.from_tensors({"layers.0.a": torch.randn(5000, generator=g), "layers.0.n": torch.randn(17, generator=g),
                                  "layers.1.c": torch.randn(3, 2048, generator=g)})


@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
@pytest.mark.parametrize("blocks", [False, True])
def test_a_compiled_replay_is_the_entries_applied_one_by_one(dist: str, blocks: bool, update_path: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """apply_many of a compiled perturber (the C kernel: one pass over the weights for all
    entries, or one call per entry with a block schedule) is bitwise the eager perturber's
    applications one by one, an entry of four alphas included."""
    from fedzo.zo.masks import BlockSchedule, default_blocks

    if update_path == "native":  # the table call serves it all: no per-tensor update is asked for
        monkeypatch.setattr(cpu_lanes, "apply", lambda *a, **k: pytest.fail("a per-tensor update"))

    spec = NoiseSpec("portable", dist, chunk_size=1024)
    entries = [(11, (1e-3,)), (12, (1e-3, -2e-3, 5e-4, -1e-4)), (13, ()), (14, (-3e-3, 2e-4))]
    eager, comp = _three_tensors(), _three_tensors()
    schedule = BlockSchedule(default_blocks(eager)) if blocks else None
    for seed, alphas in entries:
        Perturber(eager, spec, blocks=schedule).apply(seed, alphas)
    Perturber(comp, spec, compiled=True, blocks=schedule).apply_many(entries)
    assert all(torch.equal(_bits(x), _bits(y)) for x, y in zip(eager.tensors, comp.tensors, strict=True))
    assert not torch.equal(eager.tensors[0], _three_tensors().tensors[0])


def test_the_table_call_leaves_half_precision_weights_to_the_chunked_path() -> None:
    """A bfloat16 tensor among float32 ones: the table call refuses the set (nothing applied)
    and the perturber's per-tensor paths move it as the eager one does."""
    def params() -> ParamSet:
        ps = _three_tensors()
        return ParamSet.from_tensors({**dict(zip(ps.names, ps.tensors, strict=True)),
                                      "h": torch.linspace(-1, 1, 3000).to(torch.bfloat16)})

    comp = params()
    words = [WORDS] * len(comp.tensors)
    assert not cpu_lanes.apply_entries(comp.tensors, [(words, (1e-3,))], TABLE, True)
    assert all(torch.equal(x, y) for x, y in zip(comp.tensors, params().tensors, strict=True))
    spec = NoiseSpec("portable", "gaussian", chunk_size=1024)
    eager = params()
    Perturber(eager, spec).apply_many([(3, (1e-3,)), (4, (2e-3, -1e-3))])
    Perturber(comp, spec, compiled=True).apply_many([(3, (1e-3,)), (4, (2e-3, -1e-3))])
    assert all(torch.equal(x.view(torch.int16) if x.dtype == torch.bfloat16 else _bits(x),
                           y.view(torch.int16) if y.dtype == torch.bfloat16 else _bits(y))
               for x, y in zip(eager.tensors, comp.tensors, strict=True))


def test_overlapping_tensors_are_left_to_the_per_tensor_paths() -> None:
    """Two views sharing elements would be updated concurrently and in another order by one
    table call: it refuses them (nothing written)."""
    base = torch.linspace(-1.0, 1.0, 6000)
    views = [base[:4000], base[3000:]]
    assert not cpu_lanes.apply_entries(views, [([WORDS, WORDS], (1e-3,))], TABLE, True)
    assert torch.equal(base, torch.linspace(-1.0, 1.0, 6000))
    assert cpu_lanes.apply_entries([base[:3000], base[3000:]], [([WORDS, WORDS], (1e-3,))], TABLE, True)
    assert not torch.equal(base, torch.linspace(-1.0, 1.0, 6000))


def test_a_refused_table_call_leaves_the_update_to_the_per_tensor_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the C kernel refuses a table (nothing written), apply_entries says so and stops
    offering it; the compiled perturber then moves the weights as the eager one does."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("native lanes: refused its arguments (-2)")

    monkeypatch.setattr(cpu_lanes, "_TABLE_READY", {})
    monkeypatch.setattr(native_lanes.LanesKernel, "apply_table", refuse)
    comp = _three_tensors()
    words = [WORDS] * len(comp.tensors)
    monkeypatch.setitem(cpu_lanes._TABLE_READY, True, True)  # past its probe
    assert not cpu_lanes.apply_entries(comp.tensors, [(words, (1e-3,))], TABLE, True)
    assert cpu_lanes._TABLE_READY[True] is False
    spec = NoiseSpec("portable", "gaussian", chunk_size=1024)
    eager = _three_tensors()
    Perturber(eager, spec).apply_many([(3, (1e-3,)), (4, (2e-3,))])
    Perturber(comp, spec, compiled=True).apply_many([(3, (1e-3,)), (4, (2e-3,))])
    assert all(torch.equal(_bits(x), _bits(y)) for x, y in zip(eager.tensors, comp.tensors, strict=True))


def test_a_failing_update_kernel_leaves_the_rest_to_the_chunked_path(monkeypatch) -> None:
    def broken(*args):
        raise RuntimeError("no C compiler")

    monkeypatch.setitem(cpu_lanes._KERNELS, ("apply", True, 1), broken)
    w = _weights()
    assert cpu_lanes.apply(WORDS, w, (1e-3,), TABLE, True) == 0 and torch.equal(w, _weights())
    assert cpu_lanes._KERNELS[("apply", True, 1)] is None


def test_an_apply_kernel_serves_only_after_matching_add_on_a_probe() -> None:
    """The Gaussian kernel's FMA (inductor's primitive) passes the probe; a kernel that rounds
    the product and the sum apart does not, so it would never serve."""
    prim = cpu_lanes._inductor_fma()
    assert prim is not None  # torch 2.13 has it: the fast path is the one tested here
    fused = torch.compile(cpu_lanes._apply_kernel(True, 2, prim), dynamic=True, fullgraph=True)
    assert cpu_lanes._verified(fused, True, 2, TABLE)
    two_roundings = torch.compile(cpu_lanes._apply_kernel(True, 2, lambda z, a, w: w + z * a), dynamic=True,
                                  fullgraph=True)
    assert not cpu_lanes._verified(two_roundings, True, 2, TABLE)
