"""Memory-planned groups: how many clients' own states one device holds at once.

In ``rows`` mode every client of a joint turn keeps its own copy of its trainable tensors
(:mod:`fedzo.federation.transports.batched.rowstate`): a few KiB for prompt tuning, the
whole model for full weights (and twice that under forward gradients, whose tangents are as
large). When a round's participants' copies do not fit the state budget together, the
engine splits them into groups of nearly equal size that each fit and runs each group's
lockstep in turn. Clients never read each other's state, so a group computes what the
whole round would (a pass of other rows may round a loss differently: float32 rounding, as
any joint pass).

The budget is ``federation.batched.max_state_mib`` when set; otherwise a share of what the
device has free when the round starts: on CUDA :func:`torch.cuda.mem_get_info`'s free
bytes less a headroom (the larger of ``CUDA_HEADROOM_MIB`` and ``CUDA_HEADROOM_FRACTION``
of the device), of which ``STATE_SHARE`` goes to states and the rest to a pass's
activations (:func:`cuda_pass_bytes`); on a CPU ``CPU_STATE_SHARE`` of the available RAM
(psutil, else ``/proc/meminfo``'s MemAvailable). The functions here that plan are pure;
only :func:`free_bytes` reads the device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

STATE_SHARE = 0.75  # of a CUDA device's usable free bytes, for the clients' states (the rest: a pass)
CPU_STATE_SHARE = 0.5  # of a CPU host's available RAM, for the clients' states
CUDA_HEADROOM_MIB = 512.0  # kept free on a CUDA device: the allocator's blocks, kernels' workspaces
CUDA_HEADROOM_FRACTION = 0.05  # ... or this share of the device, when larger
ACTIVATION_COPIES = 4  # a pass's live activations, in units of its widest layer's (rows x width x widest)
MIB = 2**20


class StateTooLarge(RuntimeError):
    """Not even one client's state fits the budget."""


@dataclass(frozen=True)
class Plan:
    """How a round's clients run: group sizes (in client order) and what bounded them."""

    groups: tuple[int, ...]
    per_client_bytes: int
    budget_bytes: float
    source: str  # "max_state_mib" or "device memory"

    def note(self) -> str:
        """The round record's words for the grouping ('' for one group)."""
        if len(self.groups) < 2:
            return ""
        return f"in {len(self.groups)} groups of <= {max(self.groups)} ({self.source})"


def state_bytes(tensors: Sequence[torch.Tensor], *, tangents: bool = False, chunk: int = 0) -> int:
    """Bytes of one client's own state: a copy of ``tensors`` (and as much again for the
    forward-mode tangents of forward gradients), and its perturber's scratch buffer of at
    most ``chunk`` elements (the direction chunk it regenerates into)."""
    total = sum(t.numel() * t.element_size() for t in tensors)
    scratch = min(chunk, max((t.numel() for t in tensors), default=0)) * (tensors[0].element_size() if tensors else 0)
    return (2 * total if tangents else total) + scratch


def plan_groups(n: int, per_client: int, budget: float) -> list[int]:
    """Sizes of the fewest groups of ``n`` clients (in order, sizes differing by at most one)
    whose states of ``per_client`` bytes each fit ``budget`` bytes.

    Raises :class:`StateTooLarge` when one client's state alone exceeds the budget.
    """
    if n < 1:
        return []
    if per_client > budget:
        raise StateTooLarge(f"one client's state ({per_client / MIB:.1f} MiB) exceeds the budget "
                            f"({budget / MIB:.1f} MiB)")
    fit = n if per_client <= 0 or math.isinf(budget) else max(1, int(budget // per_client))
    count = -(-n // fit)
    small, extra = divmod(n, count)
    return [small + 1 if i < extra else small for i in range(count)]


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def free_bytes(device: torch.device | str) -> float:
    """What the batched engine may use on ``device`` now: on CUDA the free bytes less a
    headroom, on a CPU the available RAM; infinite on other devices (unknown)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        return max(0.0, free - max(CUDA_HEADROOM_MIB * MIB, CUDA_HEADROOM_FRACTION * total))
    if dev.type == "cpu":
        try:
            import psutil

            return float(psutil.virtual_memory().available)
        except ImportError:
            available = _meminfo_available()
            return math.inf if available is None else float(available)
    return math.inf


def state_budget(max_state_mib: float | None, device: torch.device | str, usable: float | None = None) -> float:
    """The states' budget in bytes: ``max_state_mib``, else a share of the device's usable
    bytes (``usable``, default :func:`free_bytes`; see the module doc)."""
    if max_state_mib is not None:
        return max_state_mib * MIB
    usable = free_bytes(device) if usable is None else usable
    return usable * (CPU_STATE_SHARE if torch.device(device).type == "cpu" else STATE_SHARE)


def cuda_pass_bytes(usable: float, states: float) -> float:
    """A CUDA pass's activation cap (rows x width x widest layer, as ``max_pass_mib``): what
    is usable beside the states, over the ``ACTIVATION_COPIES`` a pass holds at once."""
    return max(0.0, usable - states) / ACTIVATION_COPIES


def make_plan(n: int, per_client: int, max_state_mib: float | None, device: torch.device | str,
              usable: float | None = None) -> Plan:
    """The groups of a round of ``n`` clients whose states take ``per_client`` bytes each."""
    budget = state_budget(max_state_mib, device, usable)
    source = "max_state_mib" if max_state_mib is not None else "device memory"
    return Plan(tuple(plan_groups(n, per_client, budget)), per_client, budget, source)
