"""The simulated clock: how long each client's part of a round takes on its device.

One :class:`Clock` per run answers every timing question (the round engine's, and the
``auto`` catch-up policy's). Per client and round::

    downlink  = bytes_down * 8 / downlink_bps + latency
    replay    = catch-up entries x trainable elements, regenerated on the device
    compute   = the work of each of the client's own batches (fedzo.devices.work: their
                real rows x padded width, the forward and backward the tuning needs, the
                regenerations), priced on the reference host by the run's calibration
                and scaled by the device's speed ratio; without a calibration, FLOPs over
                the device's sustained FLOP/s (an estimate)
    uplink    = bytes_up * 8 / uplink_bps + latency

Host wall time never enters these numbers (unless ``compute_model: measured``), so who
is kept (deadline, over-commit, availability) reproduces bitwise. :func:`simulate_round`
turns a round's timings into who is kept and when the round ends.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedzo.devices.availability import client_rng, draw_offline_time
from fedzo.devices.dims import ArchDims
from fedzo.devices.profiles import DeviceProfile
from fedzo.devices.speed import HOST_FLOPS_FP32, SpeedFigure, speed_of
from fedzo.devices.work import StepWork, Tuning, step_work
from fedzo.errors import ConfigError

if TYPE_CHECKING:
    from fedzo.calibration.model import Calibration, Group

Status = Literal["ok", "late", "dropped", "offline"]

# FLOP-equivalent of one regenerated element (counter hash + Box-Muller + fused add);
# an estimate, used only for profiles that give FLOP/s and no speed_ratio.
REGEN_FLOPS_PER_ELEMENT = 20.0
# A catch-up entry on the wire: seed (8 B) + coefficient (8 B).
CATCH_UP_ENTRY_BYTES = 16

ComputeModel = Literal["flops", "measured"]


def transfer_seconds(nbytes: float, bps: float, latency_s: float) -> float:
    """Seconds to move ``nbytes`` over a ``bps`` link with one-way ``latency_s``."""
    return nbytes * 8.0 / bps + latency_s


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
    arch: ArchDims
    tuning: Tuning
    n_params: int  # every parameter of the model
    trainable: int  # trainable elements (replay cost)
    trainable_bytes: int  # the trainable weights on the wire (full catch-up)
    batch: int
    seq: int  # the token limit (memory model: the worst case)
    dtype: str

    @property
    def peft(self) -> Literal["full", "lora", "prefix"]:
        """The memory model's name of the tuning (prompt tuning counts as prefix)."""
        return "prefix" if self.tuning.peft == "prompt" else self.tuning.peft

    @property
    def mode(self) -> Literal["zo", "bp"]:
        """ZO or backprop."""
        return self.tuning.method

    def memory_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`fedzo.devices.memory.estimate_memory`."""
        return {"dtype": self.dtype, "lora_rank": self.tuning.lora_rank, "prefix_tokens": self.tuning.virtual_tokens,
                "optimizer": self.tuning.optimizer, "logits": "last",
                "checkpoint_fraction": 1.0 if self.tuning.checkpointing else 0.0, "mask": self.tuning.mask,
                "forward_grad": self.tuning.tangent_forwards_per_step > 0,
                "server_state": self.tuning.server_state_copies}


@dataclass(frozen=True)
class ClientWork:
    """What one client did in a round, as the clock prices it."""

    down_bytes: int
    up_bytes: int
    catch_up_entries: int = 0
    batches: tuple[tuple[int, int], ...] = ()  # (rows, padded width) of each training step
    host_seconds: float | None = None  # measured compute on the host (compute_model: measured)


ClockBasis = Literal["calibrated", "flops-estimate", "measured-host"]


def host_steps_seconds(calibration: Calibration, group: Group, arch: ArchDims, tuning: Tuning, trainable: int,
                       batches: Sequence[tuple[int, int]]) -> float:
    """Reference-host seconds of the training steps on ``batches`` (rows, padded width) under
    ``calibration``'s ``group``: the one price of a step, which the clock scales by a
    device's speed and ``fedzo.calibration.validate`` checks against measurement."""
    return sum(calibration.step_seconds(group, step_work(arch, [b], tuning, trainable)) for b in batches)


class Clock:
    """The simulated clock of a run: each client's device, the model's shape, its calibration."""

    def __init__(self, profiles: list[DeviceProfile], shape: ModelShape, *, seed: int,
                 compute_model: Literal["flops", "measured"] = "flops", calibration: Calibration | None = None,
                 calibration_source: str = "", speeds: list[SpeedFigure] | None = None) -> None:
        """``profiles`` and ``speeds`` (default: from each profile alone) by client id."""
        self.profiles = profiles
        self.shape = shape
        self.seed = seed
        self.compute_model = compute_model
        self.calibration = calibration
        self.group = calibration.group(shape.model, shape.tuning, calibration_source) if calibration else None
        catalog = {p.name: p for p in profiles}
        self.speeds = speeds or [speed_of(p, catalog, calibration, shape.dtype) for p in profiles]

    @property
    def basis(self) -> ClockBasis:
        """Where compute seconds come from."""
        if self.compute_model == "measured":
            return "measured-host"
        return "calibrated" if self.calibration is not None else "flops-estimate"

    def _device_flops(self, client: int) -> float:
        rate = self.profiles[client].flops(self.shape.dtype)
        return rate if rate is not None else HOST_FLOPS_FP32 / self.speeds[client].ratio

    def speed_ratio(self, client: int) -> float:
        """Device seconds per reference-host second (see :mod:`fedzo.devices.speed`)."""
        return self.speeds[client].ratio

    def step_work(self, batch: tuple[int, int]) -> StepWork:
        """The work of one training step on a batch of (rows, width)."""
        return step_work(self.shape.arch, [batch], self.shape.tuning, self.shape.trainable)

    def modelled_compute_seconds(self, client: int, batches: tuple[tuple[int, int], ...]) -> float:
        """Device seconds of training on ``batches``: calibrated, or FLOPs (an estimate)."""
        if self.calibration is not None and self.group is not None:
            host = host_steps_seconds(self.calibration, self.group, self.shape.arch, self.shape.tuning,
                                      self.shape.trainable, batches)
            if batches and self.shape.tuning.method == "bp":  # a FedAvg client-round: arrays in and out, optimizer state
                host += self.calibration.round_seconds(self.shape.tuning.optimizer, self.shape.trainable)
            return host * self.speed_ratio(client)
        works = [self.step_work(b) for b in batches]
        flops = sum(w.flops + w.regen_elements * REGEN_FLOPS_PER_ELEMENT for w in works)
        return flops / self._device_flops(client)

    def compute_seconds(self, client: int, work: ClientWork) -> float:
        """Device compute seconds under the compute model (measured: host seconds x speed ratio)."""
        if self.compute_model == "measured" and work.host_seconds is not None:
            return work.host_seconds * self.speed_ratio(client)
        return self.modelled_compute_seconds(client, work.batches)

    def regen_seconds(self, client: int, entries: int) -> float:
        """Device seconds to regenerate ``entries`` directions over the trainable elements."""
        elements = entries * self.shape.trainable
        if self.calibration is not None:
            return self.calibration.regen_seconds(elements) * self.speed_ratio(client)
        return elements * REGEN_FLOPS_PER_ELEMENT / self._device_flops(client)

    def timing(self, client: int, work: ClientWork) -> ClientTiming:
        """One client's round durations (offline time filled by :meth:`offline_at`)."""
        p = self.profiles[client]
        measured = self.compute_model == "measured" and work.host_seconds is not None
        return ClientTiming(
            client_id=str(client),
            download_s=transfer_seconds(work.down_bytes, p.downlink_bps, p.latency_s),
            # measured host seconds already include the catch-up on the host
            replay_s=0.0 if measured else self.regen_seconds(client, work.catch_up_entries),
            compute_s=self.compute_seconds(client, work),
            upload_s=transfer_seconds(work.up_bytes, p.uplink_bps, p.latency_s),
        )

    def offline_at(self, client: int, timing: ClientTiming, *, round_: int, attempt: int,
                   start: float) -> float | None:
        """When ``client`` is offline during its work (seeded by run seed, round, client, attempt)."""
        return self._offline(client, round_, attempt, start, start + timing.work_s)

    def offline_at_start(self, client: int, *, round_: int, attempt: int, start: float) -> bool:
        """Whether ``client`` is offline when the round starts: the same draw as
        :meth:`offline_at`, whose answer at the start does not depend on the work's length
        (so no work need be priced to know it)."""
        off = self._offline(client, round_, attempt, start, start + 1.0)
        return off is not None and off <= start

    def _offline(self, client: int, round_: int, attempt: int, start: float, end: float) -> float | None:
        rng = client_rng(self.seed, round_, client) if attempt == 0 else np.random.default_rng(
            [self.seed, round_, client, attempt])
        return draw_offline_time(self.profiles[client].availability, start_s=start, end_s=end, rng=rng)

    # -- catch-up costs (the ``auto`` policy asks) ---------------------------------------
    def replay_seconds(self, client: int, entries: int) -> float:
        """Download ``entries`` catch-up pairs and regenerate one direction for each."""
        p = self.profiles[client]
        return (transfer_seconds(entries * CATCH_UP_ENTRY_BYTES, p.downlink_bps, p.latency_s)
                + self.regen_seconds(client, entries))

    def full_seconds(self, client: int) -> float:
        """Download the trainable weights (and the server optimizer's buffers, as large each)."""
        p = self.profiles[client]
        return transfer_seconds(self.shape.trainable_bytes * (1 + self.shape.tuning.server_state_copies),
                                p.downlink_bps, p.latency_s)


def sample_sizes(participants: int, eligible: int, over_commit: float) -> tuple[int, int | None]:
    """(clients to sample, how many to keep or None): over-commit samples
    ceil((1 + over_commit) x participants) and keeps the first ``participants``."""
    n = min(participants, eligible)
    count = min(eligible, math.ceil(round((1.0 + over_commit) * n, 9)))
    return count, (n if count > n else None)
