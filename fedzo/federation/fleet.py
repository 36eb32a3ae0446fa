"""The device fleet of a federated run: who runs on what, who fits, and its clock.

A scenario's ``fleet:`` gives each client id a device profile
(:meth:`fedzo.config.fleet.FleetConfig.profiles_per_client`); a scenario without one
runs every client on the ``host`` stand-in (this machine behind a 100/20 Mbit/s link,
always online, never excluded).

Before round 1 every distinct profile is checked against the run's training configuration
with :func:`fedzo.devices.fit.check_fit` (``memory_policy`` refuse: the run stops with the
reason; exclude: those clients are never sampled). During rounds the run's
:class:`~fedzo.devices.clock.Clock` (:attr:`FleetPlan.clock`) times each client on its
profile.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fedzo.devices.clock import HOST_FLOPS_FP32, Clock, ComputeModel, ModelShape, sample_sizes
from fedzo.devices.dims import arch_dims
from fedzo.devices.profiles import DeviceProfile
from fedzo.devices.speed import SpeedFigure, speed_of
from fedzo.devices.work import Tuning
from fedzo.errors import ConfigError, MemoryBudgetExceeded
from fedzo.models.adapters import base_model
from fedzo.records import DeviceFit, FleetRecord
from fedzo.tasks.partition import label_histogram
from fedzo.zo.params import ParamSet
from fedzo.zo.server_optimizers import SERVER_OPTIMIZERS
from fedzo.zo_parts import estimator_config

if TYPE_CHECKING:
    from fedzo.calibration.model import Calibration
    from fedzo.config.scenario import Scenario
    from fedzo.federation.parts import RunParts
    from fedzo.tasks.objective import Objective

HOST_PROFILE = "host"


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


_DTYPES = {"torch.float32": "fp32", "torch.float16": "fp16", "torch.bfloat16": "bf16"}


def model_shape(scenario: Scenario, objective: Objective, params: ParamSet) -> ModelShape:
    """The :class:`ModelShape` of a run from its scenario, built objective and trainable set."""
    clf = objective.classifier
    base = base_model(clf.model)
    first = next(iter(base.parameters()))
    dtype = _DTYPES.get(str(first.dtype), "fp32")
    seq = int(getattr(clf, "max_length", None) or scenario.data.max_length or 128)
    return ModelShape(
        model=scenario.model.name, config=base.config, arch=arch_dims(base.config), tuning=tuning_of(scenario),
        n_params=sum(p.numel() for p in base.parameters()), trainable=params.numel,
        trainable_bytes=params.nbytes, batch=scenario.data.batch_size, seq=seq, dtype=dtype)


def tuning_of(scenario: Scenario) -> Tuning:
    """What a scenario trains and how, as the work model needs it."""
    zo, m = scenario.zo, scenario.model
    est = estimator_config(zo)
    return Tuning(method="zo" if scenario.is_zo else "bp", peft=m.peft, lora_rank=m.lora_rank,
                  virtual_tokens=m.virtual_tokens, forwards_per_step=est.forwards_per_step,
                  regenerations_per_step=est.regenerations_per_step,
                  tangent_forwards_per_step=est.tangent_forwards_per_step if scenario.is_zo else 0, optimizer="adam" if scenario.optimizer.name == "fo-adam" else "sgd",
                  checkpointing=scenario.optimizer.checkpointing, mask=zo.mask,
                  server_state_copies=len(SERVER_OPTIMIZERS.get(scenario.federation.server_optimizer.name).buffers)
                  if scenario.is_zo else 0)


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
    seed: int = 0  # the run seed (availability draws)
    from_scenario: bool = True
    partitions: list[list[int]] = field(default_factory=list)  # client -> its training examples
    labels: list[int] = field(default_factory=list)  # label of each training example
    calibration: Calibration | None = None
    calibration_source: str = ""
    speeds: dict[str, SpeedFigure] = field(default_factory=dict)  # profile -> its speed relative to the host
    measured_memory: tuple[int, int] | None = None  # (process peak, model-attributable) of one client's step

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
        """(clients to sample, how many to keep or None) under over-commit."""
        return sample_sizes(participants, len(self.eligible), self.over_commit)

    @property
    def clock(self) -> Clock:
        """The run's simulated clock over these profiles."""
        return Clock([self.profiles[n] for n in self.names], self.shape, seed=self.seed,
                     compute_model=self.compute_model, calibration=self.calibration,
                     calibration_source=self.calibration_source, speeds=[self.speeds[n] for n in self.names])

    # -- reporting ---------------------------------------------------------------------
    def modelled_memory(self) -> dict[str, int]:
        """Modelled peak bytes of a client, per device profile."""
        return {name: rep.needed for name, rep in self.fits.items()}

    def measure_memory(self, scenario: Scenario) -> None:
        """Run one client's real step in an isolated process and keep its peak memory."""
        from fedzo.devices.validate import ValidationCase, measure

        t = self.shape.tuning
        m = measure(ValidationCase(model=scenario.model.name, mode=t.method, batch=self.shape.batch,
                                   seq=self.shape.seq, peft=t.peft, optimizer=t.optimizer,
                                   checkpointing=t.checkpointing, task=scenario.data.task,
                                   dtype=scenario.model.dtype), timeout=1800,
                    tensors=False)
        self.measured_memory = (int(m["hwm"]), int(m["hwm"]) - int(m["rss_import"]))

    def record(self) -> FleetRecord:
        """The ``kind: fleet`` metrics record (host measurements only in its measured_* fields)."""
        s = self.shape
        devices = {}
        for name in sorted(self.profiles):
            rep = self.fits[name]
            devices[name] = DeviceFit(
                clients=[c for c, n in enumerate(self.names) if n == name], needed_bytes=rep.needed,
                available_bytes=rep.budget, fits=rep.fits, modelled_client_memory_bytes=rep.needed,
                peak_phase=rep.breakdown.peak_phase, accelerator=self.profiles[name].accelerator,
                message=rep.message(), speed_ratio=self.speeds[name].ratio, speed_basis=self.speeds[name].basis,
                speed_chain=list(self.speeds[name].chain))
        return FleetRecord(
            model=s.model, mode=s.mode, batch=s.batch, seq=s.seq, peft=s.peft, dtype=s.dtype,
            n_params=s.n_params, trainable_params=s.trainable, forwards_per_step=s.tuning.forwards_per_step,
            memory_policy=self.memory_policy, compute_model=self.compute_model, clock=self.clock.basis,
            calibration_sha256=self.calibration.digest() if self.calibration else None,
            measured_client_memory_bytes=self.measured_memory[0] if self.measured_memory else None,
            measured_client_model_bytes=self.measured_memory[1] if self.measured_memory else None,
            deadline_seconds=self.deadline, over_commit=self.over_commit, devices=devices,
            excluded_clients=list(self.excluded), label_histograms=label_histogram(self.labels, self.partitions))


def _profiles(scenario: Scenario) -> tuple[list[str], dict[str, DeviceProfile]]:
    n = scenario.federation.num_clients
    if scenario.fleet is None:
        return [HOST_PROFILE] * n, {HOST_PROFILE: host_profile()}
    from fedzo.devices.profiles import load_profiles

    names = scenario.fleet.profiles_per_client(n)
    catalog = load_profiles()
    return names, {name: catalog[name] for name in sorted(set(names))}


def describe_fleet(scenario: Scenario) -> str:
    """One line naming a run's fleet, e.g. ``fleet: 10 clients: 6 raspberry-pi-5, 4 laptop-cpu;
    compute priced by calibration reference-host``."""
    n = scenario.federation.num_clients
    fleet = scenario.fleet
    if fleet is None:
        return (f"fleet: none given, so {n} clients on the host stand-in (this machine's speed, always online, "
                "a 100/20 Mbit/s link); add a fleet: section to simulate devices")
    names = fleet.profiles_per_client(n)
    mix = ", ".join(f"{names.count(p)} {p}" for p in dict.fromkeys(names))
    clock = (f"compute priced by calibration {fleet.calibration}" if fleet.calibration else
             "compute times are FLOP estimates (no fleet.calibration)")
    if fleet.compute_model == "measured":
        clock = "compute times are host seconds scaled by each profile's speed"
    return f"fleet: {n} clients: {mix}; {clock}; memory_policy {fleet.memory_policy}"


def _catalog() -> dict[str, DeviceProfile]:
    from fedzo.devices.profiles import load_profiles

    try:
        return load_profiles()
    except ConfigError:  # an unreadable catalog: the fleet's own profiles still resolve
        return {}


def plan_fleet(scenario: Scenario, parts: RunParts, *, calibration: Calibration | None = None,
               calibration_source: str = "") -> FleetPlan:
    """Profiles, memory checks and exclusions of a run built from ``parts``; raises when the
    fleet cannot train.

    ``calibration`` prices compute on the reference host (None: FLOP estimates).

    Raises :class:`~fedzo.errors.MemoryBudgetExceeded` (``memory_policy: refuse``, or every
    client excluded) with :func:`fedzo.devices.fit.check_fit`'s explanation.
    """
    from fedzo.devices.fit import check_fit

    n = scenario.federation.num_clients
    objective = parts.objective
    shape = model_shape(scenario, objective, ParamSet.from_module(objective.classifier))
    names, profiles = _profiles(scenario)
    fleet = scenario.fleet
    policy = fleet.memory_policy if fleet is not None else "report"
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
        if scenario.federation.min_clients > n - len(excluded):
            raise ConfigError(f"federation.min_clients: {scenario.federation.min_clients} exceeds the "
                              f"{n - len(excluded)} clients left after excluding {list(excluded)} "
                              f"({', '.join(too_big)} out of memory); lower min_clients")
    catalog = {**_catalog(), **profiles}
    speeds = {name: speed_of(p, catalog, calibration, shape.dtype) for name, p in profiles.items()}
    return FleetPlan(
        names=names, profiles=profiles, shape=shape, fits=fits, excluded=excluded, memory_policy=policy, speeds=speeds,
        deadline=fleet.deadline_seconds if fleet else None, over_commit=fleet.over_commit if fleet else 0.0,
        compute_model=fleet.compute_model if fleet else "flops", seed=scenario.seed,
        from_scenario=fleet is not None, partitions=parts.partitions,
        labels=[int(e.label) for e in objective.train],
        calibration=calibration, calibration_source=calibration_source)


# --------------------------------------------------------------------------- frontier
def memory_frontier(plan: FleetPlan) -> dict[str, Any]:
    """``memory_frontier.json`` content: BP and ZO bytes of the run's model family at the run's
    batch x seq, and the budgets of the fleet's devices (and of the device catalog)."""
    from fedzo.devices.architectures import FAMILIES, model_config
    from fedzo.devices.memory import count_parameters, estimate_memory

    s = plan.shape
    kwargs = s.memory_kwargs()
    kind = arch_dims(s.config).kind
    family = "causal-lm" if kind == "decoder" else "encoder"
    members = [(name, model_config(name)) for name in FAMILIES[family]]
    if s.model not in FAMILIES[family]:
        members.insert(0, (s.model, s.config))
    models = []
    for name, config in members:
        zo = estimate_memory(config, "zo", batch=s.batch, seq=s.seq, peft=s.peft,  # ZO-SGD, as a federation runs
                             **{**kwargs, "optimizer": "sgd"}).total
        bp = estimate_memory(config, "bp", batch=s.batch, seq=s.seq, peft=s.peft,
                             **{**kwargs, "optimizer": "adam" if s.mode == "zo" else s.tuning.optimizer}).total
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
        "bp_optimizer": "adam" if s.mode == "zo" else s.tuning.optimizer,
        "budgets_bytes": budgets,
        "budget_devices": {name: p.memory_budget for name, p in sorted(devices.items())},
        "models": models,
    }
