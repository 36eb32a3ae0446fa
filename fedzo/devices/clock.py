"""Simulated wall-clock of a federated round: pure functions of sizes, rates and seconds.

Per client and round:
    downlink  = bytes_down * 8 / downlink_bps + latency
    replay    = catch-up entries x trainable params x seconds per regenerated element
    compute   = K steps x 2q forwards x (2 x params x tokens FLOP) / sustained FLOP/s
                (or measured host seconds x the profile's speed_ratio)
    uplink    = bytes_up * 8 / uplink_bps + latency
Host wall time never enters these numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from fedzo.devices.availability import client_rng, draw_offline_time
from fedzo.devices.profiles import DeviceProfile
from fedzo.errors import ConfigError

Status = Literal["ok", "late", "dropped", "offline"]

# Regenerating one direction element on the reference host: a framework Gaussian pass over
# SmolLM2-135M's 134.5 M parameters took about 0.5 s (shared/DESIGN.md), i.e. ~3.7 ns each.
HOST_REGEN_SECONDS_PER_ELEMENT = 3.7e-9
# FLOP-equivalent of one regenerated element (counter hash + Box-Muller + fused add);
# an estimate, used only for profiles that give FLOP/s and no speed_ratio.
REGEN_FLOPS_PER_ELEMENT = 20.0


def transfer_seconds(nbytes: float, bps: float, latency_s: float) -> float:
    """Seconds to move ``nbytes`` over a ``bps`` link with one-way ``latency_s``."""
    return nbytes * 8.0 / bps + latency_s


def forward_flops(n_params: int, tokens: int) -> float:
    """FLOPs of one forward pass: about 2 x parameters x tokens."""
    return 2.0 * n_params * tokens


def zo_compute_seconds(
    profile: DeviceProfile,
    *,
    n_params: int,
    batch: int,
    seq: int,
    q: int = 1,
    local_steps: int = 1,
    dtype: str = "fp32",
    host_step_seconds: float | None = None,
) -> float:
    """Local ZO compute: ``local_steps`` x 2q forwards.

    With ``host_step_seconds`` (one measured step on the reference host) and a profile
    ``speed_ratio``, the measurement is scaled; otherwise FLOPs / sustained FLOP/s.
    """
    if host_step_seconds is not None and profile.speed_ratio is not None:
        return local_steps * host_step_seconds * profile.speed_ratio
    flops = profile.flops(dtype)
    if flops is None:
        raise ConfigError(
            f"device {profile.name!r}: needs flops_{dtype} (or flops_fp32) to time compute "
            "without a measured host step (give host_step_seconds and speed_ratio)"
        )
    per_step = 2 * q * forward_flops(n_params, batch * seq)
    return local_steps * per_step / flops


def replay_seconds(profile: DeviceProfile, *, entries: int, trainable_params: int) -> float:
    """Catch-up on the device: each log entry regenerates one direction over the params."""
    elements = entries * trainable_params
    if profile.speed_ratio is not None:
        return elements * HOST_REGEN_SECONDS_PER_ELEMENT * profile.speed_ratio
    flops = profile.flops("fp32") or profile.flops_fp16 or profile.flops_bf16
    if flops is None:  # unreachable for validated profiles (speed_ratio or FLOP/s required)
        raise ConfigError(f"device {profile.name!r}: needs speed_ratio or flops_fp32")
    return elements * REGEN_FLOPS_PER_ELEMENT / flops


@dataclass(frozen=True)
class ClientTiming:
    """One client's durations for a round (seconds) and when it goes offline (absolute)."""

    client_id: str
    download_s: float
    replay_s: float
    compute_s: float
    upload_s: float
    offline_at: float | None = None  # absolute simulated time; None = stays online

    @property
    def work_s(self) -> float:
        return self.download_s + self.replay_s + self.compute_s + self.upload_s


def client_timing(
    profile: DeviceProfile,
    client_id: str,
    *,
    down_bytes: float,
    up_bytes: float,
    compute_s: float,
    replay_entries: int = 0,
    trainable_params: int = 0,
    offline_at: float | None = None,
) -> ClientTiming:
    """Combine a profile's link and speed with a round's sizes into a ClientTiming."""
    return ClientTiming(
        client_id=client_id,
        download_s=transfer_seconds(down_bytes, profile.downlink_bps, profile.latency_s),
        replay_s=replay_seconds(profile, entries=replay_entries, trainable_params=trainable_params),
        compute_s=compute_s,
        upload_s=transfer_seconds(up_bytes, profile.uplink_bps, profile.latency_s),
        offline_at=offline_at,
    )


def with_availability(
    timings: list[ClientTiming],
    profiles: list[DeviceProfile],
    *,
    seed: int,
    round_idx: int,
    start: float = 0.0,
    client_indices: list[int] | None = None,
) -> list[ClientTiming]:
    """Fill ``offline_at`` from each profile's availability model, deterministically.

    Client i draws from ``client_rng(seed, round_idx, client_indices[i])`` over
    ``[start, start + work)``, so the result does not depend on list order.
    """
    if len(timings) != len(profiles):
        raise ConfigError(f"{len(timings)} timings but {len(profiles)} profiles")
    indices = client_indices if client_indices is not None else list(range(len(timings)))
    out = []
    for timing, profile, idx in zip(timings, profiles, indices, strict=True):
        off = draw_offline_time(
            profile.availability, start_s=start, end_s=start + timing.work_s,
            rng=client_rng(seed, round_idx, idx),
        )
        out.append(ClientTiming(**{**asdict(timing), "offline_at": off}))
    return out


@dataclass(frozen=True)
class ClientTimeline:
    """Absolute simulated times of one client in one round, ready for a JSONL record."""

    client_id: str
    start: float
    download_end: float
    replay_end: float
    compute_end: float
    upload_end: float
    status: Status
    end: float  # when the server learns the outcome (upload_end, or offline time)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class RoundResult:
    """Who was kept, every client's timeline, and when the round ended."""

    start: float
    end: float
    timelines: tuple[ClientTimeline, ...]

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def kept(self) -> tuple[str, ...]:
        return tuple(t.client_id for t in self.timelines if t.status == "ok")


def simulate_round(
    clients: list[ClientTiming],
    deadline: float | None = None,
    keep: int | None = None,
    start: float = 0.0,
) -> RoundResult:
    """Decide who is kept and when a synchronous round ends.

    - a client whose ``offline_at`` falls before its upload ends is ``offline`` (the server
      sees the loss at that moment);
    - with ``deadline`` (seconds after ``start``), clients finishing later are ``late``;
    - with ``keep`` (over-commit), the first ``keep`` clients to finish are kept (ties by
      client id) and the rest ``dropped``; the round ends when the last kept one finishes;
    - otherwise the round ends when the server has heard from every client (the slowest
      kept client, an offline event, or the deadline if someone was late).
    """
    if keep is not None and keep < 1:
        raise ConfigError(f"keep: {keep} must be >= 1")
    if deadline is not None and deadline <= 0:
        raise ConfigError(f"deadline: {deadline} must be > 0 seconds")
    drafts: list[tuple[ClientTiming, float, float, float, float, Status, float]] = []
    for c in clients:
        d_end = start + c.download_s
        r_end = d_end + c.replay_s
        c_end = r_end + c.compute_s
        u_end = c_end + c.upload_s
        status: Status = "ok"
        end = u_end
        if c.offline_at is not None and c.offline_at < u_end:
            status, end = "offline", max(c.offline_at, start)
        elif deadline is not None and u_end > start + deadline:
            status, end = "late", start + deadline
        drafts.append((c, d_end, r_end, c_end, u_end, status, end))

    finishers = sorted(
        (x for x in drafts if x[5] == "ok"), key=lambda x: (x[4], x[0].client_id)
    )
    kept_ids = {x[0].client_id for x in finishers[:keep]} if keep is not None else None
    timelines = []
    for c, d_end, r_end, c_end, u_end, status, end in drafts:
        if kept_ids is not None and status == "ok" and c.client_id not in kept_ids:
            status = "dropped"
        timelines.append(ClientTimeline(c.client_id, start, d_end, r_end, c_end, u_end, status, end))

    ok_ends = [t.upload_end for t in timelines if t.status == "ok"]
    if keep is not None and len(ok_ends) >= keep:
        round_end = max(ok_ends)  # the server stops waiting once it has enough replies
    else:
        ends = [t.end for t in timelines if t.status != "dropped"]
        round_end = max(ends, default=start)
    return RoundResult(start=start, end=round_end, timelines=tuple(timelines))
