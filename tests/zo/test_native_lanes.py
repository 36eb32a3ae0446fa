"""The C kernel of the fused update (:mod:`fedzo.zo.native_lanes`): bitwise the eager
generator with ``add_`` per alpha, at any start, split over threads; built once per
processor; absent without a compiler, where the compiled torch kernels serve."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from fedzo.zo import cpu_lanes, native_lanes
from fedzo.zo.noise import _portable_fill, gaussian_table, key_words

KEY = 0x1234567890ABCDE
WORDS = key_words(KEY)
TABLE = gaussian_table(torch.device("cpu"))
N = (1 << 21) + 77  # enough blocks for two threads, odd length


def _weights() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(N, generator=g) * torch.pow(10.0, torch.randint(-8, 3, (N,), generator=g).float())


def _eager(start: int, alphas: tuple[float, ...], gaussian: bool) -> torch.Tensor:
    """``add_`` of the eager generator's direction (which fills from a group boundary)."""
    group = 2 if gaussian else 32
    head = start % group
    z = torch.empty(N + head)
    _portable_fill(KEY, start - head, z, gaussian)
    w = _weights()
    for a in alphas:
        w.add_(z[head:], alpha=a)
    return w


@pytest.fixture
def fresh_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No library loaded yet, a cache of this test's own."""
    monkeypatch.setenv("FEDZO_CACHE", str(tmp_path))
    monkeypatch.setattr(native_lanes, "_LIBRARY", [])
    monkeypatch.setattr(cpu_lanes, "_KERNELS", {})
    monkeypatch.setattr(cpu_lanes, "_TABLE_READY", {})
    yield tmp_path


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("start", [0, 1, 31, (1 << 33) - 5, (1 << 37) - 3])  # odd, mid-group, high word changing
@pytest.mark.parametrize("threads", [1, 2])
def test_the_c_kernel_is_the_eager_generator_with_add(gaussian: bool, start: int, threads: int) -> None:
    kern = native_lanes.kernel(gaussian)
    assert kern is not None  # the CI host has a C compiler, as torch.compile needs one
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for alphas in ((1e-3,), (0.7311, -2.5e-3), (1e-3, -2e-3, 3e-7)):
            w = _weights()
            kern(w, *cpu_lanes._scalars(WORDS, start, w.device), TABLE, torch.tensor(alphas))
            assert torch.equal(w.view(torch.int32), _eager(start, alphas, gaussian).view(torch.int32))
    finally:
        torch.set_num_threads(before)


def test_the_library_is_built_once_per_processor(fresh_library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert native_lanes.library() is not None
    built = native_lanes.library_path()
    assert built.is_file() and built.parent == fresh_library / "native"
    monkeypatch.setattr(native_lanes, "_processor", lambda: "another processor")
    assert native_lanes.library_path() != built  # a shared cache keeps one build per processor


def test_without_a_compiler_the_compiled_torch_kernel_serves(fresh_library: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", str(fresh_library / "no-such-compiler"))
    assert native_lanes.kernel(True) is None and not list((fresh_library / "native").glob("*.so"))
    w = _weights()
    assert cpu_lanes.apply(WORDS, w, (1e-3, -2e-3), TABLE, True, 8) == 2
    assert torch.equal(w.view(torch.int32), _eager(8, (1e-3, -2e-3), True).view(torch.int32))


def test_the_c_kernel_can_be_turned_off(fresh_library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native_lanes.ENV, "0")
    assert native_lanes.kernel(False) is None and not (fresh_library / "native").exists()


def test_the_c_kernel_refuses_what_it_cannot_update() -> None:
    kern = native_lanes.kernel(True)
    assert kern is not None
    with pytest.raises(ValueError, match="float32"):
        kern(torch.zeros(8, dtype=torch.float64), *cpu_lanes._scalars(WORDS, 0, torch.device("cpu")), TABLE,
             torch.tensor([1.0]))
    with pytest.raises(ValueError, match="one to three alphas"):
        kern(torch.zeros(8), *cpu_lanes._scalars(WORDS, 0, torch.device("cpu")), TABLE, torch.ones(4))


def test_small_tensors_take_the_c_kernel_but_never_a_small_compiled_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Norms and biases (fewer than FUSED_MIN_ELEMENTS elements) are updated in place by the C
    kernel, bitwise the chunked add_; torch.compile's kernel leaves them to the chunked path."""
    monkeypatch.setattr(cpu_lanes, "_KERNELS", {})
    small = torch.linspace(-1.0, 1.0, 576)
    want = small.clone()
    z = torch.empty(576)
    _portable_fill(KEY, 0, z, True)
    want.add_(z, alpha=1e-3)
    assert cpu_lanes.eligible(small) and cpu_lanes.apply(WORDS, small, (1e-3,), TABLE, True) == 1
    assert torch.equal(small.view(torch.int32), want.view(torch.int32))
    monkeypatch.setattr(native_lanes, "_LIBRARY", [None])
    monkeypatch.setattr(cpu_lanes, "_KERNELS", {})
    assert not cpu_lanes.eligible(small)
    assert cpu_lanes.apply(WORDS, small, (1e-3,), TABLE, True) == 0  # were it asked


SIZES = (1, 576, 0, (1 << 16) + 3, 3 * (1 << 16) + 77)  # a norm, none, across one and several blocks
STARTS = (7, 0, 0, (1 << 32) - 5, 31)  # odd, mid-group, the high word changing


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_table_call_is_the_entries_applied_one_by_one(gaussian: bool, threads: int) -> None:
    """One call over five tensors and three entries (of 1, 3 and 2 alphas) leaves every
    element where the eager direction with add_, entry after entry and tensor by tensor, does."""
    kern = native_lanes.kernel(gaussian)
    assert kern is not None
    g = torch.Generator().manual_seed(5)
    weights = [torch.randn(n, generator=g) for n in SIZES]
    keys = [[KEY + 1000 * e + s for s in range(len(SIZES))] for e in range(3)]
    alphas = [(1e-3,), (0.7311, -2.5e-3, 3e-7), (-1e-2, 4e-4)]
    want = [w.clone() for w in weights]
    group = 2 if gaussian else 32
    for e, entry_alphas in enumerate(alphas):
        for s, (w, start) in enumerate(zip(want, STARTS, strict=True)):
            head = start % group
            z = torch.empty(w.numel() + head)
            _portable_fill(keys[e][s], start - head, z, gaussian)
            for a in entry_alphas:
                w.add_(z[head:], alpha=a)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        kern.apply_table(weights, [[key_words(k) for k in row] for row in keys], alphas, TABLE, STARTS)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a.view(torch.int32), b.view(torch.int32)) for a, b in zip(weights, want, strict=True))


def test_a_table_call_refuses_what_it_cannot_update() -> None:
    kern = native_lanes.kernel(True)
    assert kern is not None
    w = torch.zeros(8)
    with pytest.raises(ValueError, match="float32"):
        kern.apply_table([w, torch.zeros(4, dtype=torch.bfloat16)], [[WORDS, WORDS]], [(1.0,)], TABLE)
    with pytest.raises(ValueError, match="one key per tensor"):
        kern.apply_table([w, w], [[WORDS]], [(1.0,)], TABLE)
    with pytest.raises(ValueError, match="one to three alphas"):
        kern.apply_table([w], [[WORDS]], [(1.0, 2.0, 3.0, 4.0)], TABLE)
    assert torch.equal(w, torch.zeros(8))
