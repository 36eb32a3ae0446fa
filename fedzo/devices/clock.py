"""The simulated clock: how long each client's part of a round takes on its device.

One :class:`Clock` per run answers every timing question (the round engine's, and the
``auto`` catch-up policy's). Per client and round::

    downlink  = bytes_down * 8 / downlink_bps + latency
    replay    = catch-up entries x trainable params x seconds per regenerated element
    compute   = ZO: K steps x forwards per step x (2 x params x tokens FLOP) / sustained FLOP/s
                BP: examples x tokens at about three forwards' cost
                (compute_model measured: host seconds x the profile's speed_ratio)
    uplink    = bytes_up * 8 / uplink_bps + latency

With ``compute_model: flops`` host wall time never enters these numbers, so who is kept
(deadline, over-commit, availability) reproduces bitwise. :func:`simulate_round` turns a
round's timings into who is kept and when the round ends.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

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
# Sustained fp32 rate of the 2-core x86 reference host: an estimate (2 cores x AVX2 FMA
# 32 FLOP/cycle x ~2.5 GHz = 160 GFLOP/s peak, ~25 % sustained in PyTorch). Used for the
# host stand-in and for profiles that give only a speed_ratio.
HOST_FLOPS_FP32 = 4.0e10
# Backprop costs about three forward passes (forward + backward of activations and weights).
BP_FLOPS_PER_FORWARD = 3.0
# A catch-up entry on the wire: seed (8 B) + coefficient (8 B).
CATCH_UP_ENTRY_BYTES = 16

ComputeModel = Literal["flops", "measured"]


def transfer_seconds(nbytes: float, bps: float, latency_s: float) -> float:
    """Seconds to move ``nbytes`` over a ``bps`` link with one-way ``latency_s``."""
    return nbytes * 8.0 / bps + latency_s


def forward_flops(n_params: int, tokens: int) -> float:
    """FLOPs of one forward pass: about 2 x parameters x tokens."""
    return 2.0 * n_params * tokens


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


@dataclass(frozen=True)
class ModelShape:
    """What the clock and the memory model need to know about a run's training."""

    model: str
    config: Any  # transformers PretrainedConfig of the (base) model
    n_params: int  # every parameter of the model (FLOPs)
    trainable: int  # trainable elements (replay cost)
    trainable_bytes: int  # the trainable weights on the wire (full catch-up)
    batch: int
    seq: int
    peft: Literal["full", "lora", "prefix"]
    lora_rank: int
    prefix_tokens: int
    dtype: str
    mode: Literal["zo", "bp"]
    optimizer: Literal["sgd", "adam"]
    q: int
    forwards_per_step: int

    def memory_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`fedzo.devices.memory.estimate_memory`."""
        return {"dtype": self.dtype, "lora_rank": self.lora_rank, "prefix_tokens": self.prefix_tokens,
                "optimizer": self.optimizer, "logits": "last"}


@dataclass(frozen=True)
class ClientWork:
    """What one client did in a round, as the clock prices it."""

    down_bytes: int
    up_bytes: int
    catch_up_entries: int = 0
    local_steps: int = 1  # ZO steps
    examples: int | None = None  # BP: examples trained (default: one batch)
    host_seconds: float | None = None  # measured compute on the host (compute_model: measured)


class Clock:
    """The simulated clock of a run: each client's device, the model's shape, the compute model."""

    def __init__(self, profiles: list[DeviceProfile], shape: ModelShape, *, seed: int,
                 compute_model: ComputeModel = "flops") -> None:
        self.profiles = profiles  # by client id
        self.shape = shape
        self.seed = seed
        self.compute_model = compute_model

    def _device_flops(self, profile: DeviceProfile) -> float:
        rate = profile.flops(self.shape.dtype)
        if rate is None:  # a profile with only a speed_ratio (validated: one of them is set)
            if profile.speed_ratio is None:
                raise ConfigError(f"device {profile.name!r}: needs speed_ratio or flops_fp32")
            rate = HOST_FLOPS_FP32 / profile.speed_ratio
        return rate

    def modelled_compute_seconds(self, client: int, *, local_steps: int = 1, examples: int | None = None) -> float:
        """Local compute from FLOPs: ZO ``local_steps`` x forwards per step at batch x seq;
        BP ``examples`` x seq tokens at about three forwards' cost."""
        s = self.shape
        if s.mode == "zo":
            flops = local_steps * s.forwards_per_step * forward_flops(s.n_params, s.batch * s.seq)
        else:
            flops = BP_FLOPS_PER_FORWARD * forward_flops(s.n_params, (examples or s.batch) * s.seq)
        return flops / self._device_flops(self.profiles[client])

    def compute_seconds(self, client: int, work: ClientWork) -> float:
        """Device compute seconds under the compute model (measured: host seconds x speed_ratio)."""
        p = self.profiles[client]
        if self.compute_model == "measured" and work.host_seconds is not None:
            ratio = p.speed_ratio or HOST_FLOPS_FP32 / self._device_flops(p)
            return work.host_seconds * ratio
        return self.modelled_compute_seconds(client, local_steps=work.local_steps, examples=work.examples)

    def timing(self, client: int, work: ClientWork) -> ClientTiming:
        """One client's round durations (offline time filled by :meth:`offline_at`)."""
        p = self.profiles[client]
        measured = self.compute_model == "measured" and work.host_seconds is not None
        return ClientTiming(
            client_id=str(client),
            download_s=transfer_seconds(work.down_bytes, p.downlink_bps, p.latency_s),
            # measured host seconds already include the catch-up on the host
            replay_s=0.0 if measured else replay_seconds(p, entries=work.catch_up_entries,
                                                         trainable_params=self.shape.trainable),
            compute_s=self.compute_seconds(client, work),
            upload_s=transfer_seconds(work.up_bytes, p.uplink_bps, p.latency_s),
        )

    def offline_at(self, client: int, timing: ClientTiming, *, round_: int, attempt: int,
                   start: float) -> float | None:
        """When ``client`` is offline during its work (seeded by run seed, round, client, attempt)."""
        rng = client_rng(self.seed, round_, client) if attempt == 0 else np.random.default_rng(
            [self.seed, round_, client, attempt])
        return draw_offline_time(self.profiles[client].availability, start_s=start,
                                 end_s=start + timing.work_s, rng=rng)

    # -- catch-up costs (the ``auto`` policy asks) ---------------------------------------
    def replay_seconds(self, client: int, entries: int) -> float:
        """Download ``entries`` catch-up pairs and regenerate one direction for each."""
        p = self.profiles[client]
        return (transfer_seconds(entries * CATCH_UP_ENTRY_BYTES, p.downlink_bps, p.latency_s)
                + replay_seconds(p, entries=entries, trainable_params=self.shape.trainable))

    def full_seconds(self, client: int) -> float:
        """Download the trainable weights."""
        p = self.profiles[client]
        return transfer_seconds(self.shape.trainable_bytes, p.downlink_bps, p.latency_s)


def sample_sizes(participants: int, eligible: int, over_commit: float) -> tuple[int, int | None]:
    """(clients to sample, how many to keep or None): over-commit samples
    ceil((1 + over_commit) x participants) and keeps the first ``participants``."""
    n = min(participants, eligible)
    count = min(eligible, math.ceil(round((1.0 + over_commit) * n, 9)))
    return count, (n if count > n else None)
