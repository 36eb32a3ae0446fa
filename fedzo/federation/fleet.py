"""The device fleet of a federated run: who runs on what, who fits, how long a round takes.

A run with a scenario ``fleet:`` gives each client id a device profile
(:meth:`fedzo.scenario.FleetConfig.profiles_per_client`); a plain
:class:`~fedzo.federation.config.FederatedRunConfig` runs every client on the ``host``
stand-in (this machine behind a 100/20 Mbit/s link, always online, never excluded).

Before round 1 every distinct profile is checked against the run's training configuration
with :func:`fedzo.devices.fit.check_fit` (``memory_policy`` refuse: the run stops with the
reason; exclude: those clients are never sampled). During rounds the simulated clock of a
client is a pure function of deterministic inputs: the profile, measured message bytes,
catch-up entries and the FLOP model of the model at batch x seq (``compute_model: flops``),
plus seeded availability draws. Decisions about who is kept (deadline, over-commit,
availability) therefore never depend on host timing, so runs stay bitwise reproducible.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedzo.devices.availability import client_rng, draw_offline_time
from fedzo.devices.clock import ClientTiming, forward_flops, replay_seconds, transfer_seconds
from fedzo.devices.profiles import DeviceProfile
from fedzo.errors import ConfigError, MemoryBudgetExceeded

HOST_PROFILE = "host"
# Sustained fp32 rate of the 2-core x86 reference host: an estimate (2 cores x AVX2 FMA
# 32 FLOP/cycle x ~2.5 GHz = 160 GFLOP/s peak, ~25 % sustained in PyTorch). Used for the
# host stand-in and for profiles that give only a speed_ratio.
HOST_FLOPS_FP32 = 4.0e10
# Backprop costs about three forward passes (forward + backward of activations and weights).
BP_FLOPS_PER_FORWARD = 3.0

ComputeModel = Literal["flops", "measured"]


def physical_memory_bytes() -> int:
    """Physical memory of this machine (0 when the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def host_profile() -> DeviceProfile:
    """The stand-in device of a run without a fleet: host-speed compute behind one link."""
    return DeviceProfile(
        name=HOST_PROFILE, description="this machine behind a 100/20 Mbit/s link (no fleet given)",
        memory_budget=physical_memory_bytes() or 1 << 40, flops_fp32=HOST_FLOPS_FP32, speed_ratio=1.0,
        uplink_bps=20e6, downlink_bps=100e6, latency_s=0.05,
    )


@dataclass(frozen=True)
class ModelShape:
    """What the memory and compute models need to know about the run's training."""

    model: str
    config: Any  # transformers PretrainedConfig of the (base) model
    n_params: int  # every parameter of the model (FLOPs)
    trainable: int  # trainable elements (replay cost)
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


_DTYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def model_shape(cfg: Any, objective: Any, trainable: int) -> ModelShape:
    """The :class:`ModelShape` of a run from its config and its built objective."""
    fed = cfg.federation
    clf = objective.classifier
    model = clf.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    first = next(iter(base.parameters()))
    dtype = _DTYPES.get(str(first.dtype), "fp32")
    peft = {"full": "full", "lora": "lora", "prefix": "prefix", "prompt": "prefix"}[cfg.peft]
    seq = int(getattr(clf, "max_length", None) or cfg.max_length or 128)
    forwards = 2 * fed.q if fed.estimator == "central" else fed.q + 1
    return ModelShape(
        model=cfg.model, config=base.config, n_params=sum(p.numel() for p in base.parameters()),
        trainable=trainable, batch=fed.batch_size, seq=seq, peft=peft,  # type: ignore[arg-type]
        lora_rank=cfg.lora_rank, prefix_tokens=cfg.virtual_tokens, dtype=dtype,
        mode="zo" if fed.is_zo else "bp", optimizer="adam" if fed.optimizer == "fo-adam" else "sgd",
        q=fed.q, forwards_per_step=forwards,
    )


@dataclass
class FleetPlan:
    """Profiles per client, memory verdicts, exclusions and the round-clock settings."""

    names: list[str]  # profile name of each client id
    profiles: dict[str, DeviceProfile]
    shape: ModelShape
    fits: dict[str, Any] = field(default_factory=dict)  # profile -> FitReport
    excluded: tuple[int, ...] = ()
    memory_policy: str = "refuse"
    deadline: float | None = None
    over_commit: float = 0.0
    compute_model: ComputeModel = "flops"
    from_scenario: bool = True
    label_histograms: list[list[int]] = field(default_factory=list)  # client -> examples per label

    # -- who ---------------------------------------------------------------------------
    def profile_of(self, client: int) -> DeviceProfile:
        """The device profile of ``client``."""
        return self.profiles[self.names[client]]

    @property
    def eligible(self) -> list[int]:
        """Client ids that may be sampled (not excluded), in order."""
        gone = set(self.excluded)
        return [c for c in range(len(self.names)) if c not in gone]

    def sample_sizes(self, participants: int) -> tuple[int, int | None]:
        """(clients to sample, how many to keep or None): over-commit samples
        ceil((1 + over_commit) x participants) and keeps the first ``participants``."""
        n = min(participants, len(self.eligible))
        count = min(len(self.eligible), math.ceil(round((1.0 + self.over_commit) * n, 9)))
        return count, (n if count > n else None)

    # -- clock -------------------------------------------------------------------------
    def _device_flops(self, profile: DeviceProfile) -> float:
        rate = profile.flops(self.shape.dtype)
        if rate is None:  # a profile with only a speed_ratio (validated: one of them is set)
            assert profile.speed_ratio is not None
            rate = HOST_FLOPS_FP32 / profile.speed_ratio
        return rate

    def modelled_compute_seconds(self, profile: DeviceProfile, *, local_steps: int = 1,
                                 examples: int | None = None) -> float:
        """Local compute from FLOPs: ZO ``local_steps`` x forwards per step at batch x seq;
        BP ``examples`` x seq tokens at about three forwards' cost."""
        s = self.shape
        if s.mode == "zo":
            flops = local_steps * s.forwards_per_step * forward_flops(s.n_params, s.batch * s.seq)
        else:
            flops = BP_FLOPS_PER_FORWARD * forward_flops(s.n_params, (examples or s.batch) * s.seq)
        return flops / self._device_flops(profile)

    def compute_seconds(self, profile: DeviceProfile, host_seconds: float | None, **kw: Any) -> float:
        """Device compute seconds under ``compute_model`` (measured: host seconds x speed_ratio)."""
        if self.compute_model == "measured" and host_seconds is not None:
            ratio = profile.speed_ratio or HOST_FLOPS_FP32 / self._device_flops(profile)
            return host_seconds * ratio
        return self.modelled_compute_seconds(profile, **kw)

    def timing(self, client: int, *, down_bytes: float, up_bytes: float, replay_entries: int,
               host_seconds: float | None, **compute_kw: Any) -> ClientTiming:
        """One client's round durations (offline time filled by :meth:`offline_at`)."""
        p = self.profile_of(client)
        measured = self.compute_model == "measured" and host_seconds is not None
        return ClientTiming(
            client_id=str(client),
            download_s=transfer_seconds(down_bytes, p.downlink_bps, p.latency_s),
            # measured host seconds already include the catch-up on the host
            replay_s=0.0 if measured else replay_seconds(p, entries=replay_entries,
                                                         trainable_params=self.shape.trainable),
            compute_s=self.compute_seconds(p, host_seconds, **compute_kw),
            upload_s=transfer_seconds(up_bytes, p.uplink_bps, p.latency_s),
        )

    def offline_at(self, client: int, timing: ClientTiming, *, seed: int, round_: int, attempt: int,
                   start: float) -> float | None:
        """When ``client`` is offline during its work (seeded by run seed, round, client)."""
        rng = client_rng(seed, round_, client) if attempt == 0 else np.random.default_rng(
            [seed, round_, client, attempt])
        return draw_offline_time(self.profile_of(client).availability, start_s=start,
                                 end_s=start + timing.work_s, rng=rng)

    # -- reporting ---------------------------------------------------------------------
    def modelled_memory(self) -> dict[str, int]:
        """Modelled peak bytes of a client, per device profile."""
        return {name: rep.needed for name, rep in self.fits.items()}

    def record(self) -> dict[str, Any]:
        """The ``kind: fleet`` metrics record (deterministic: no host measurements)."""
        s = self.shape
        devices: dict[str, Any] = {}
        for name in sorted(self.profiles):
            rep = self.fits[name]
            devices[name] = {
                "clients": [c for c, n in enumerate(self.names) if n == name],
                "needed_bytes": rep.needed, "available_bytes": rep.budget, "fits": rep.fits,
                "modelled_client_memory_bytes": rep.needed, "peak_phase": rep.breakdown.peak_phase,
                "accelerator": self.profiles[name].accelerator, "message": rep.message(),
            }
        return {
            "kind": "fleet", "round": 0, "model": s.model, "mode": s.mode, "batch": s.batch, "seq": s.seq,
            "peft": s.peft, "dtype": s.dtype, "n_params": s.n_params, "trainable_params": s.trainable,
            "forwards_per_step": s.forwards_per_step, "memory_policy": self.memory_policy,
            "compute_model": self.compute_model, "deadline_seconds": self.deadline,
            "over_commit": self.over_commit, "devices": devices, "excluded_clients": list(self.excluded),
            "label_histograms": self.label_histograms,
        }


def plan_fleet(cfg: Any, fleet: Any | None, objective: Any, trainable: int) -> FleetPlan:
    """Profiles, memory checks and exclusions of a run; raises when the fleet cannot train.

    ``fleet`` is a :class:`fedzo.scenario.FleetConfig` or None (every client on ``host``).
    Raises :class:`~fedzo.errors.MemoryBudgetExceeded` (``memory_policy: refuse``, or every
    client excluded) with :func:`fedzo.devices.fit.check_fit`'s explanation.
    """
    from fedzo.devices.fit import check_fit

    n = cfg.federation.num_clients
    shape = model_shape(cfg, objective, trainable)
    if fleet is None:
        host = host_profile()
        names, profiles = [HOST_PROFILE] * n, {HOST_PROFILE: host}
        policy, deadline, over, compute = "report", None, 0.0, "flops"
    else:
        from fedzo.devices.profiles import load_profiles

        names = fleet.profiles_per_client(n)
        catalog = load_profiles()
        profiles = {name: catalog[name] for name in sorted(set(names))}
        policy, deadline, over = fleet.memory_policy, fleet.deadline_seconds, fleet.over_commit
        compute = getattr(fleet, "compute_model", "flops")
    fits = {
        name: check_fit(p, shape.config, shape.mode, shape.batch, shape.seq, shape.peft,
                        model_name=shape.model, **shape.memory_kwargs())
        for name, p in profiles.items()
    }
    too_big = [name for name, rep in fits.items() if not rep.fits]
    excluded: tuple[int, ...] = ()
    if too_big and policy == "refuse":
        detail = " ".join(fits[name].message() for name in too_big)
        raise MemoryBudgetExceeded(f"fleet.memory_policy: refuse: {detail} Use a configuration that fits, "
                                   "or memory_policy: exclude to train without these devices.")
    if too_big and policy == "exclude":
        excluded = tuple(c for c, name in enumerate(names) if name in too_big)
        if len(excluded) == n:
            detail = " ".join(fits[name].message() for name in too_big)
            raise MemoryBudgetExceeded(f"fleet.memory_policy: exclude: every client is excluded, none can "
                                       f"train this configuration. {detail}")
        if cfg.federation.min_clients > n - len(excluded):
            raise ConfigError(f"federation.min_clients: {cfg.federation.min_clients} exceeds the "
                              f"{n - len(excluded)} clients left after excluding {list(excluded)} "
                              f"({', '.join(too_big)} out of memory); lower min_clients")
    return FleetPlan(names=names, profiles=profiles, shape=shape, fits=fits, excluded=excluded,
                     memory_policy=policy, deadline=deadline, over_commit=over, compute_model=compute,
                     from_scenario=fleet is not None, label_histograms=_label_histograms(cfg, objective))


def _label_histograms(cfg: Any, objective: Any) -> list[list[int]]:
    """Examples per label on each client's partition (the same split the clients train on)."""
    from fedzo.tasks.partition import label_histogram, partition

    fed = cfg.federation
    labels = [int(e.label) for e in objective.train]
    parts = partition(labels, fed.num_clients, fed.partition, alpha=fed.partition_alpha, seed=fed.seed)
    return label_histogram(labels, parts)


# --------------------------------------------------------------------------- frontier
def memory_frontier(plan: FleetPlan) -> dict[str, Any]:
    """``memory_frontier.json`` content: BP and ZO bytes of the run's model family at the run's
    batch x seq, and the budgets of the fleet's devices (and of the device catalog)."""
    from fedzo.devices.architectures import FAMILIES, model_config
    from fedzo.devices.memory import arch_dims, count_parameters, estimate_memory

    s = plan.shape
    kwargs = s.memory_kwargs()
    kind = arch_dims(s.config).kind
    family = "causal-lm" if kind == "decoder" else "encoder"
    members = [(name, model_config(name)) for name in FAMILIES[family]]
    if s.model not in FAMILIES[family]:
        members.insert(0, (s.model, s.config))
    models = []
    for name, config in members:
        zo = estimate_memory(config, "zo", batch=s.batch, seq=s.seq, peft=s.peft, **kwargs).total
        bp = estimate_memory(config, "bp", batch=s.batch, seq=s.seq, peft=s.peft,
                             **{**kwargs, "optimizer": "adam" if s.mode == "zo" else s.optimizer}).total
        models.append({"name": name, "params": count_parameters(arch_dims(config)), "zo_bytes": zo,
                       "bp_bytes": bp})
    from fedzo.devices.profiles import load_profiles

    devices = dict(plan.profiles)
    try:
        devices = {**load_profiles(), **devices}
    except ConfigError:  # an unreadable catalog: the fleet's own budgets still make a frontier
        pass
    budgets = sorted({p.memory_budget for p in devices.values()})
    return {
        "family": family, "batch": s.batch, "seq": s.seq, "peft": s.peft, "dtype": s.dtype,
        "bp_optimizer": "adam" if s.mode == "zo" else s.optimizer,
        "budgets_bytes": budgets,
        "budget_devices": {name: p.memory_budget for name, p in sorted(devices.items())},
        "models": models,
    }
