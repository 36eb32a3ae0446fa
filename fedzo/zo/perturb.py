"""In-place, chunked application of seeded directions to a parameter set.

``Perturber.apply(seed, alphas)`` regenerates the direction ``z`` for ``seed`` once,
chunk by chunk, and applies ``theta += a * z`` for each ``a`` in ``alphas`` in turn on
that chunk. A ZO step is three such passes (``+eps``; ``-2 eps``; ``+eps - lr g``:
restore fused with the update), and replay applies all of a step's alphas in a single
pass with the very same floating-point operations per element, so replayed parameters
are bitwise equal to the trained ones.

Extra memory is one chunk of ``chunk_size`` elements (plus the generator's temporary
integer lanes for the same chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fedzo.zo.masks import BlockSchedule, Mask, default_blocks, make_mask
from fedzo.zo.noise import DirectionStream, Distribution, GeneratorKind, NoiseSpec, gaussian_table, key_words
from fedzo.zo.params import ParamSet
from fedzo.zo.seeds import derive_seed
from fedzo.zo.shared_directions import SharedDirections

# final(tensor_index, start, theta_chunk, z_chunk): extra per-chunk work after the alphas
ChunkHook = Callable[[int, int, torch.Tensor, torch.Tensor], None]

# Replaying a large trainable set (the server's rounds, a client's catch-up, a run's rebuild)
# compiles the portable generator when torch.compile works: the same bits as eager (the
# known-answer vectors check both), several times faster per regeneration on a CPU: the
# server's round of K = 10 entries at SmolLM2-135M size went from 10.9 s to 2.2 s
# (`fedzo bench federation --numel 134515008`), after a one-off compile of a few seconds
# that pays off within a round there and would not at small sizes.
COMPILED_REPLAY_MIN_ELEMENTS = 1 << 24


def replay_compiled(spec: NoiseSpec, numel: int) -> bool:
    """Whether replay on ``numel`` trainable elements uses the compiled portable generator
    (host speed only: the directions are bitwise the same)."""
    return spec.generator is GeneratorKind.PORTABLE and numel >= COMPILED_REPLAY_MIN_ELEMENTS


class Perturber:
    """Applies directions of one noise spec to one parameter set, in place."""

    def __init__(
        self,
        params: ParamSet,
        spec: NoiseSpec,
        *,
        mask: Mask | None = None,
        blocks: BlockSchedule | None = None,
        compiled: bool = False,
        shared: SharedDirections | None = None,
        fused: bool | None = None,
    ) -> None:
        """``fused``: regenerate and apply each direction with the fused Triton kernel
        (:mod:`fedzo.zo.triton_direction`): None (default) where the tensors are on CUDA and
        Triton imports, True to ask for it anywhere (a CPU runs it under ``TRITON_INTERPRET=1``),
        False never. It serves the portable generator without a mask, a shared store or a
        per-chunk hook; other applications take the chunked path."""
        self.params = params
        self.spec = spec
        self.mask = mask
        self.blocks = blocks
        self.compiled = compiled
        self.shared = shared  # host-side store of generated chunks (the batched engine's clients)
        self._buffers: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self.fused = fused
        self._fused_ready: bool | None = None

    def _use_fused(self, final: ChunkHook | None) -> bool:
        """Whether this application goes through the fused kernel (see ``fused``)."""
        if final is not None or self.fused is False:
            return False
        if self._fused_ready is None:
            tensors = self.params.tensors
            eligible = (self.spec.generator is GeneratorKind.PORTABLE and self.mask is None and self.shared is None
                        and all(t.is_contiguous() for t in tensors)
                        and (self.fused is True or all(t.is_cuda for t in tensors)))
            if eligible:
                from fedzo.zo.triton_direction import available

                eligible = available()
            self._fused_ready = eligible
        return self._fused_ready

    def _buffer(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.dtype, like.device)
        buf = self._buffers.get(key)
        if buf is None:
            size = min(self.spec.chunk_size, max(t.numel() for t in self.params.tensors))
            buf = torch.empty(size, dtype=like.dtype, device=like.device)
            self._buffers[key] = buf
        return buf

    def tensor_indices(self, seed: int) -> Sequence[int]:
        """The tensors a direction touches (all, or one block)."""
        if self.blocks is None:
            return range(len(self.params))
        return self.blocks.tensors_for(seed)

    @torch.no_grad()
    def apply(self, seed: int, alphas: Sequence[float], final: ChunkHook | None = None) -> None:
        """``theta += a * z(seed)`` for each ``a`` in ``alphas`` (then ``final``), in place."""
        if self._use_fused(final):
            from fedzo.zo.triton_direction import apply_fused

            indices = list(self.tensor_indices(seed))
            apply_fused([self.params.tensors[i] for i in indices], seed, alphas,
                        gaussian=self.spec.distribution is Distribution.GAUSSIAN, indices=indices)
            return
        if final is None and self._apply_native([(seed, alphas)]):
            return  # else nothing was applied
        stream = DirectionStream(self.spec, seed, compiled=self.compiled)
        chunk = self.spec.chunk_size
        for i in self.tensor_indices(seed):
            t = self.params.tensors[i]
            todo = alphas[self._apply_lanes(seed, i, t, alphas, final):]
            if not todo and alphas:
                continue
            flat = t.view(-1)
            buf = self._buffer(t)
            for start in range(0, flat.numel(), chunk):
                n = min(chunk, flat.numel() - start)
                z = stream.fill(i, start, buf[:n]) if self.shared is None else self.shared.fill(stream, i, start, buf[:n])
                if self.mask is not None:
                    self.mask.apply(i, start, z)
                piece = flat[start : start + n]
                for a in todo:
                    piece.add_(z, alpha=a)
                if final is not None:
                    final(i, start, piece, z)

    def _apply_lanes(self, seed: int, i: int, t: torch.Tensor, alphas: Sequence[float],
                     final: ChunkHook | None) -> int:
        """How many of ``alphas`` the compiled CPU path applied to tensor ``i`` in one pass per
        three alphas, no direction buffer (:func:`fedzo.zo.cpu_lanes.apply`, bitwise the
        chunked update): none unless compiled, portable, on the CPU, float32 and without a
        mask, a shared store or a per-chunk hook."""
        if (not self.compiled or final is not None or self.mask is not None or self.shared is not None
                or self.spec.generator is not GeneratorKind.PORTABLE):
            return 0
        from fedzo.zo.cpu_lanes import apply, eligible

        if not eligible(t):
            return 0
        return apply(key_words(derive_seed(seed, i)), t, alphas, gaussian_table(t.device),
                     self.spec.distribution is Distribution.GAUSSIAN)

    def _apply_native(self, entries: Sequence[tuple[int, Sequence[float]]]) -> int:
        """How many of ``entries`` (from the first, in order) the C kernel applied to all their
        tensors, one call over every tensor (:func:`fedzo.zo.cpu_lanes.apply_entries`: small
        tensors share its threads, and a replay's entries take one pass over the weights,
        bitwise the entries one by one); none unless compiled, portable, without a mask or a
        shared store, every tensor float32 on the CPU and the C kernel at hand. With a block
        schedule each entry is one call over its own block; the caller applies the rest."""
        if (not self.compiled or self.mask is not None or self.shared is not None
                or self.spec.generator is not GeneratorKind.PORTABLE or not self.params.tensors):
            return 0
        from fedzo.zo.cpu_lanes import apply_entries

        table = gaussian_table(self.params.tensors[0].device)
        gaussian = self.spec.distribution is Distribution.GAUSSIAN
        groups = [entries] if self.blocks is None else [[entry] for entry in entries]
        done = 0
        for group in groups:
            indices = list(self.tensor_indices(group[0][0]))
            keyed = [([key_words(derive_seed(seed, i)) for i in indices], alphas) for seed, alphas in group]
            if not apply_entries([self.params.tensors[i] for i in indices], keyed, table, gaussian):
                break
            done += len(group)
        return done

    @torch.no_grad()
    def apply_many(self, entries: Sequence[tuple[int, Sequence[float]]]) -> None:
        """:meth:`apply` for each ``(seed, alphas)`` in order (a replay). Where the fused
        kernel serves every direction over all tensors (no block schedule), it applies them
        in one pass over the weights, in the same rounding order, so the result is bitwise
        that of the applications one by one."""
        if entries and self.blocks is None and self._use_fused(None):
            from fedzo.zo.triton_direction import apply_entries_fused

            apply_entries_fused(list(self.params.tensors), entries,
                                gaussian=self.spec.distribution is Distribution.GAUSSIAN)
            return
        for seed, alphas in entries[self._apply_native(entries):]:  # what the C kernel left, in order
            self.apply(seed, alphas)

    def direction(self, seed: int) -> list[torch.Tensor]:
        """The full direction as dense tensors (allocates a copy of the trainable set: the
        forward-grad tangent, tests and diagnostics)."""
        out = [torch.zeros_like(t) for t in self.params.tensors]
        saved = self.params
        try:
            self.params = ParamSet(saved.names, tuple(out))
            self.apply(seed, (1.0,))
        finally:
            self.params = saved
        return out


@dataclass(frozen=True)
class PerturberRecipe:
    """How every :class:`Perturber` of one run is built: its noise spec, its mask (kind,
    density, and the run seed it is drawn with), block-wise selection and the compile flag.

    The one way a run's perturbers come to be: the trainer's, the server's global model, a
    client's working and clean copies, the batched engine's per-client copies and a rebuild
    all build theirs here, so they cannot disagree on a direction."""

    spec: NoiseSpec
    mask: str = "none"  # none | random | magnitude
    mask_density: float = 1.0
    mask_seed: int = 0  # the run's seed
    blockwise: bool = False
    compile: bool = False

    def mask_for(self, params: ParamSet) -> Mask | None:
        """The run's mask, taken from ``params`` as they are now (a magnitude mask: build it
        from the initial weights)."""
        return make_mask(self.mask, self.mask_density, self.mask_seed, params)

    def build(self, params: ParamSet, *, like: Perturber | None = None, replay: bool = False,
              shared: SharedDirections | None = None) -> Perturber:
        """A perturber of ``params``. Its mask and blocks are ``like``'s (a perturber of the
        same run over the same initial weights), else built from ``params``. ``replay``: it
        replays the update log (the global model, a client's clean copy), so a large trainable
        set compiles the generator (:func:`replay_compiled`); ``shared``: it reads generated
        chunks from that store."""
        if like is not None:
            mask, blocks = like.mask, like.blocks
        else:
            mask = self.mask_for(params)
            blocks = BlockSchedule(default_blocks(params)) if self.blockwise else None
        compiled = self.compile or (replay and replay_compiled(self.spec, params.numel))
        return Perturber(params, self.spec, mask=mask, blocks=blocks, compiled=compiled, shared=shared)
