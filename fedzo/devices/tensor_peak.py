"""The peak bytes of the tensors a piece of code allocates, whatever the C allocator does.

A process's resident set mixes two things: the tensors alive at once, and what the C
library's allocator keeps around them (glibc's malloc holds freed blocks below its mmap
threshold, so the same step peaks tens of percent apart from one machine, library version
or allocation pattern to another). The memory model predicts the first and adds a slack
for the second. :class:`TensorPeak` measures the first exactly: a dispatch mode that sees
every operator's output, counts each newly allocated storage once and uncounts it when
the storage is freed. Outputs that alias an input (views, in-place and ``out=`` operators)
allocate nothing and are skipped, so weights perturbed in place or optimizer states
updated in place are not counted; tensors made outside PyTorch's operators (from NumPy)
are not seen.
"""

from __future__ import annotations

import weakref
from functools import cache, partial
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["TensorPeak"]


@cache
def _allocates(func: Any) -> bool:
    """Whether the operator's outputs are new storage (no return aliases an input)."""
    return not any(r.alias_info is not None for r in func._schema.returns)


class TensorPeak(TorchDispatchMode):
    """Within ``with TensorPeak() as tp:``, ``tp.peak`` is the largest number of bytes of
    storages allocated inside the block and alive at once (``tp.live``: alive now)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if _allocates(func):
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.device.type != "meta":
                    self._allocated(t.untyped_storage())
        return out

    def _allocated(self, storage: torch.UntypedStorage) -> None:
        if storage in self._seen:
            return
        size = storage.nbytes()
        self._seen[storage] = weakref.ref(storage, partial(self._freed, size))
        self.live += size
        self.peak = max(self.peak, self.live)

    def _freed(self, size: int, _ref: object) -> None:
        self.live -= size
