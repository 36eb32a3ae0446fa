"""Scenario files: one YAML per federated experiment, validated into one frozen object.

A scenario holds the sections every run has (``model``, ``data``, ``zo``,
``optimizer``, ``runtime``), the ``federation:`` protocol, the ``fleet:`` of devices
and the injected ``faults:``. Unknown keys, wrong types, out-of-range values and illegal
combinations are reported at once, each with the file, the key path, the value and what
is allowed. Files in the older flat format are read through
:func:`fedzo.config.migrate.upgrade`. After loading, no code reads raw dicts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from fedzo.config.faults import FaultsConfig
from fedzo.config.federation import FederationConfig
from fedzo.config.fleet import FleetConfig, _known_profiles
from fedzo.config.migrate import upgrade
from fedzo.config.sections import (
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    RuntimeConfig,
    Section,
    ZOConfig,
    precision_problems,
)
from fedzo.config.validation import read_yaml, validate
from fedzo.errors import ScenarioError
from fedzo.zo.optimizers import OPTIMIZERS, optimizer_names


class Scenario(Section):
    """A complete federated experiment."""

    version: Literal[2] = Field(2, description="format version of this file (files without it "
                                "in the older flat format are read as version 1 and upgraded)")
    name: str = Field("federated", description="run name (shown in plots and reports; default: the file's stem)")
    seed: int = Field(0, ge=0, description="run seed: sampling, step seeds, batches, adapter initialisation")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the model and its trained parameters")
    data: DataConfig = Field(default_factory=DataConfig, description="the task and its batches")
    zo: ZOConfig = Field(default_factory=ZOConfig, description="zeroth-order probing")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig, description="optimizer and schedule")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="device, threads and compiled forwards")
    federation: FederationConfig = Field(default_factory=FederationConfig, description="the federated protocol")
    fleet: FleetConfig | None = Field(None, description="devices of the clients (default: every client "
                                      "on the host stand-in: this machine, always available)")
    faults: FaultsConfig = Field(default_factory=FaultsConfig,
                                 description="injected client faults (seeds-and-scalars protocol only)")
    out: str | None = Field(None, description="run directory (default: runs/<name>)")

    @model_validator(mode="after")
    def _combinations(self) -> Scenario:
        problems = self._protocol_problems() + self._fleet_problems() + precision_problems(self.model, self.runtime)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _protocol_problems(self) -> list[str]:
        opt, fed, zo = self.optimizer, self.federation, self.zo
        out = []
        if not OPTIMIZERS.get(opt.name).federated:
            out.append(f"optimizer.name: {opt.name!r} cannot run federated (its update is not a "
                       "coefficient times a seeded direction that clients can send as scalars); "
                       f"allowed: {', '.join(optimizer_names(federated=True))}")
        out += [f"{key}: is for centralized runs only; remove it from a federated scenario"
                for key in zo.centralized_only + (["optimizer.hybrid_fo"] if opt.hybrid_fo != "none" else [])]
        out += self._catch_up_problems()
        if self.faults.active and not self.is_zo:
            out.append(f"faults: fault injection covers the seeds-and-scalars protocol; optimizer {opt.name!r} "
                       "runs the FedAvg baseline; use zo-sgd or zo-sgd-sign, or remove faults")
        if fed.simulation.num_gpus > 0 and self.runtime.device == "cpu":
            out.append(f"federation.simulation.num_gpus: {fed.simulation.num_gpus:g} reserves GPUs for the clients "
                       "but runtime.device is 'cpu'; set runtime.device to cuda or auto, or num_gpus to 0")
        if fed.engine == "batched" and self.fleet is not None and self.fleet.compute_model == "measured":
            out.append(batched_measured_problem())
        out += self._server_optimizer_problems()
        if fed.reputation is True and not self.is_zo:
            out.append(f"federation.reputation: scores the clients' scalars of the seeds-and-scalars protocol; "
                       f"optimizer {opt.name!r} runs the FedAvg baseline; set reputation: false")
        return out

    def _catch_up_problems(self) -> list[str]:
        """What the catch-up policy cannot serve: ``seed_pool`` accumulates scalars per pool
        seed, so it needs a constant lr and one direction per step; the others serve all."""
        if self.federation.catch_up != "seed_pool":
            return []
        out = []
        opt = self.optimizer
        if opt.schedule != "constant" or opt.warmup:
            out.append("federation.catch_up: seed_pool accumulates scalars per pool seed and needs a "
                       "constant lr; set optimizer.schedule: constant and optimizer.warmup: 0, or use replay")
        if self.zo.q != 1:
            out.append(f"federation.catch_up: seed_pool needs zo.q: 1 (got {self.zo.q}); pool seeds "
                       "are directions")
        return out

    def _server_optimizer_problems(self) -> list[str]:
        so, fed = self.federation.server_optimizer, self.federation
        if so.name == "none":
            return []
        if not self.is_zo:
            return [(f"federation.server_optimizer.name: {so.name!r} moves the model of the seeds-and-scalars "
                     f"protocol; optimizer {self.optimizer.name!r} runs the FedAvg baseline; set it to none")]
        out = []
        if self.model.peft == "full":
            out.append(f"federation.server_optimizer.name: {so.name!r} keeps dense buffers the size of the trainable "
                       "set on every client, and model.peft 'full' trains every weight; use peft prompt, prefix "
                       "or lora, or server_optimizer none")
        if fed.catch_up == "seed_pool":
            out.append(f"federation.server_optimizer.name: {so.name!r} needs each round's move in order, which "
                       "catch_up 'seed_pool' folds into pool totals; use catch_up replay, full or auto")
        return out

    def _fleet_problems(self) -> list[str]:
        if self.fleet is None:
            return []
        n = self.federation.num_clients
        out = []
        if self.fleet.devices:
            total = sum(g.count for g in self.fleet.devices)
            if total != n:
                out.append(f"fleet.devices: counts add up to {total} but federation.num_clients is {n}; "
                           "make them equal")
        if self.zo.generator == "torch":
            profiles = _known_profiles()
            names = sorted(set(self.fleet.profiles_per_client(n)))
            if len({profiles[p].accelerator for p in names if p in profiles}) > 1:
                cuda = [p for p in names if profiles[p].accelerator == "cuda"]
                out.append(f"zo.generator: 'torch' with a fleet mixing cpu and cuda devices ({', '.join(cuda)} "
                           "on cuda): the torch generator draws different directions on CPU and CUDA; use "
                           "generator: portable")
        return out

    @property
    def is_zo(self) -> bool:
        """Seeds-and-scalars protocol (True) or the FedAvg backprop baseline (False)."""
        return self.optimizer.is_zo

    @property
    def out_dir(self) -> Path:
        """Where the run is written."""
        return Path(self.out) if self.out else Path("runs") / self.name


def batched_measured_problem() -> str:
    """Why the batched engine refuses a clock priced from measured host time."""
    return ("federation.engine: 'batched' with fleet.compute_model: 'measured': host seconds of a forward pass "
            "shared by many clients are not one client's work; use compute_model: flops or a calibration "
            "(fleet.calibration), or another engine")


def scenario_from_dict(data: dict[str, Any], source: str, *, kind: Literal["scenario", "run"] = "scenario") -> Scenario:
    """Validate a scenario mapping (either format) read from ``source``."""
    return validate(Scenario, upgrade(data, kind), source, error=ScenarioError)


def load_scenario(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario file; ``name`` defaults to the file's stem.

    ``overrides`` are top-level keys of the version-2 format (a section replaces the file's).
    """
    p = Path(path)
    data = upgrade(read_yaml(p), "scenario")
    data.setdefault("name", p.stem)
    if overrides:
        data.update(overrides)
    return validate(Scenario, data, str(p), error=ScenarioError)
