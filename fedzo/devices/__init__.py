"""Device fleet model: profiles (clients/ catalog), memory (BP vs ZO), round clock, budgets.

Modules: ``profiles`` (catalog loading), ``availability`` (online models), ``memory``
(byte estimates), ``architectures`` (named configs), ``fit`` (budget checks), ``clock``
(the simulated clock of a run), ``validate`` (measured peaks). Importing this package
does not import torch or transformers; import the submodules that need them directly.
"""

from __future__ import annotations

from fedzo.devices.clock import ClientTimeline, ClientTiming, ClientWork, Clock, RoundResult, simulate_round
from fedzo.devices.profiles import DeviceProfile, get_profile, load_profiles

__all__ = [
    "ClientTimeline", "ClientTiming", "ClientWork", "Clock", "DeviceProfile", "RoundResult",
    "get_profile", "load_profiles", "simulate_round",
]
