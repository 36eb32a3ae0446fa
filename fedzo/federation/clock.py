"""Simulated wall-clock of one client-round (local stand-in).

TODO(devices): switch to fedzo.devices' clock (per-profile bandwidth, latency and
compute speed) once its API exists; this module is the only place to change.
Until then every client is modelled as the host itself behind one link.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinkModel:
    """A symmetric stand-in device: host-speed compute behind one network link."""

    downlink_bytes_per_second: float = 12.5e6  # 100 Mbit/s
    uplink_bytes_per_second: float = 2.5e6  # 20 Mbit/s
    latency_seconds: float = 0.05
    compute_speed_ratio: float = 1.0  # device seconds per host second


@dataclass(frozen=True)
class ClientTimeline:
    """Simulated instants of one client-round (seconds since the run started)."""

    sim_start: float
    sim_download_end: float
    sim_compute_end: float
    sim_end: float


def client_timeline(start: float, bytes_down: int, host_compute_seconds: float, bytes_up: int,
                    link: LinkModel = LinkModel()) -> ClientTimeline:
    """Download, compute (scaled host seconds, catch-up included), upload."""
    down = start + link.latency_seconds + bytes_down / link.downlink_bytes_per_second
    comp = down + host_compute_seconds * link.compute_speed_ratio
    end = comp + link.latency_seconds + bytes_up / link.uplink_bytes_per_second
    return ClientTimeline(start, down, comp, end)
