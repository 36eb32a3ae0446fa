"""Device fleet model: profiles (clients/ catalog), memory (BP vs ZO), round clock, budgets.

Modules: ``profiles`` (catalog loading), ``availability`` (online models), ``memory``
(byte estimates), ``architectures`` (named configs), ``fit`` (budget checks), ``clock``
(simulated round time), ``validate`` (measured peaks). Importing this package does not
import torch or transformers; import the submodules that need them directly.
"""

from __future__ import annotations

from fedzo.devices.clock import (
    ClientTimeline,
    ClientTiming,
    RoundResult,
    client_timing,
    simulate_round,
    with_availability,
    zo_compute_seconds,
)
from fedzo.devices.profiles import DeviceProfile, get_profile, load_profiles

__all__ = [
    "ClientTimeline",
    "ClientTiming",
    "DeviceProfile",
    "RoundResult",
    "client_timing",
    "get_profile",
    "load_profiles",
    "simulate_round",
    "with_availability",
    "zo_compute_seconds",
]
