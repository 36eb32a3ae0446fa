"""The trainable parameter set, walked in one canonical order.

Server and clients must visit tensors in the same order for a seed to mean the same
direction everywhere: tensors are sorted by their qualified name, tied parameters are
visited once (first name wins), and the index of a tensor in this order is part of
its noise stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from fedzo.errors import ConfigError

ParamPredicate = Callable[[str, nn.Parameter], bool]


def trainable(name: str, param: nn.Parameter) -> bool:
    """Default predicate: the parameters that have ``requires_grad`` set."""
    return bool(param.requires_grad)


@dataclass(frozen=True)
class ParamSet:
    """An ordered, de-duplicated view of the tensors a ZO optimiser may change."""

    names: tuple[str, ...]
    tensors: tuple[torch.Tensor, ...]

    @classmethod
    def from_module(cls, module: nn.Module, select: ParamPredicate = trainable) -> ParamSet:
        """Select parameters of ``module`` with ``select(name, param)``, sorted by name.

        Raises ConfigError when nothing is selected (an empty trainable set would make
        every step a silent no-op).
        """
        seen: set[int] = set()
        chosen: list[tuple[str, torch.Tensor]] = []
        for name, p in module.named_parameters(remove_duplicate=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if select(name, p):
                chosen.append((name, p))
        if not chosen:
            raise ConfigError(
                "the trainable parameter set is empty: no parameter of "
                f"{type(module).__name__} matched the selection; allowed: a predicate that "
                "selects at least one parameter (e.g. 'full', 'lora', 'prefix')"
            )
        chosen.sort(key=lambda item: item[0])
        for name, t in chosen:
            if not t.is_floating_point():
                raise ConfigError(f"parameter {name!r} has dtype {t.dtype}; ZO needs floating point")
        return cls(tuple(n for n, _ in chosen), tuple(t.data for _, t in chosen))

    @classmethod
    def from_tensors(cls, named: dict[str, torch.Tensor]) -> ParamSet:
        """A ParamSet over plain tensors (e.g. a state dict), sorted by name."""
        if not named:
            raise ConfigError("the trainable parameter set is empty")
        items = sorted(named.items())
        return cls(tuple(n for n, _ in items), tuple(t for _, t in items))

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[tuple[int, str, torch.Tensor]]:
        for i, (n, t) in enumerate(zip(self.names, self.tensors, strict=True)):
            yield i, n, t

    @property
    def numel(self) -> int:
        """Number of trainable scalars."""
        return sum(t.numel() for t in self.tensors)

    @property
    def nbytes(self) -> int:
        """Bytes held by the trainable tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def snapshot(self) -> dict[str, torch.Tensor]:
        """Detached copies of the tensors, by name (for tests and checkpoints)."""
        return {n: t.detach().clone() for n, t in zip(self.names, self.tensors, strict=True)}

    def load(self, values: dict[str, torch.Tensor]) -> None:
        """Copy ``values`` into the tensors in place (exact copy, no arithmetic)."""
        missing = [n for n in self.names if n not in values]
        if missing:
            raise ConfigError(f"missing tensors for parameters: {missing[:5]}")
        with torch.no_grad():
            for n, t in zip(self.names, self.tensors, strict=True):
                t.copy_(values[n])


def param_digest(params: ParamSet) -> str:
    """sha256 over names, shapes, dtypes and raw bytes of the tensors, in canonical order."""
    import hashlib

    h = hashlib.sha256()
    for name, t in zip(params.names, params.tensors, strict=True):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
