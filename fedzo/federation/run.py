"""``run_federated``: one federated run into a run directory, on any engine, resumable."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

from fedzo.errors import ConfigError
from fedzo.federation.config import FederatedRunConfig, FederationConfig
from fedzo.runs import RunDir


def coerce_config(config: Any) -> FederatedRunConfig:
    """A FederatedRunConfig from itself, a dict, or a scenario object with a ``federation``."""
    if type(config) is FederatedRunConfig:  # a subclass (Scenario) is narrowed below
        return config
    if isinstance(config, dict):  # a scenario's fleet/out are read by fleet_of / the caller
        return FederatedRunConfig.model_validate({k: v for k, v in config.items() if k not in ("fleet", "out")})
    fed = getattr(config, "federation", None)
    if fed is None:
        raise ConfigError(f"{type(config).__name__} has no 'federation' settings; pass a "
                          "FederatedRunConfig or a scenario with a federation: section")
    data = config.model_dump() if hasattr(config, "model_dump") else dict(vars(config))
    fields = set(FederatedRunConfig.model_fields)
    picked = {k: v for k, v in data.items() if k in fields and k != "federation"}
    fed_obj = fed if isinstance(fed, FederationConfig) else FederationConfig.model_validate(
        fed.model_dump() if hasattr(fed, "model_dump") else fed)
    return FederatedRunConfig.model_validate({**picked, "federation": fed_obj})


def fleet_of(config: Any) -> Any | None:
    """The scenario's ``fleet`` (a :class:`fedzo.scenario.FleetConfig`), or None."""
    if isinstance(config, dict) and "fleet" in config:
        from fedzo.scenario import FleetConfig

        return FleetConfig.model_validate(config["fleet"])
    return getattr(config, "fleet", None)


def _prepare(config: Any, out: str | os.PathLike[str], resume: bool, force: bool) -> tuple[FederatedRunConfig, RunDir]:
    """Validated config and the run directory (fresh, or opened for resume)."""
    fleet = fleet_of(config)
    cfg = coerce_config(config)
    dump = {"kind": "federated", **cfg.model_dump(mode="json")}
    dump["federation"] = {k: v for k, v in dump["federation"].items() if k != "engine"}
    if fleet is not None:  # stored so that `fedzo run --resume` rebuilds the same fleet
        dump["fleet"] = fleet.model_dump(mode="json")
    if resume:
        run = RunDir.open(out)
        if run.config() != dump:
            changed = ", ".join(_changed_keys(run.config(), dump)) or "(formatting)"
            raise ConfigError(f"{out}: cannot resume with a changed configuration (changed: {changed}); "
                              "start a new run directory, or rerun with --force to overwrite this one")
    else:
        run = RunDir.create(out, dump, force=force)
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    return cfg, run


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two stored configurations differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new)):
            out += _changed_keys(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def run_federated(config: Any, out: str | os.PathLike[str], *, resume: bool = False,
                  force: bool = False, engine: str | None = None, progress: bool = False,
                  plots: bool = False) -> dict[str, Any]:
    """Run (or resume) a federated scenario into ``out``; returns the summary.

    ``engine`` overrides ``federation.engine`` (inprocess | simulation). The optimizer
    picks the protocol: ``zo-*`` seeds and scalars, ``fo-*`` the FedAvg backprop baseline.
    ``progress`` shows a bar per round; ``plots`` writes ``out/plots`` at the end.
    """
    from fedzo.federation.progress import RoundProgress

    eng = engine or coerce_config(config).federation.engine
    if eng not in ("inprocess", "simulation"):
        raise ConfigError(f"engine: {eng!r} cannot be started from run_federated; allowed: inprocess, "
                          "simulation (deployment: scripts/deploy_local.sh)")
    cfg, run = _prepare(config, out, resume, force)
    done = max((r.get("round", 0) for r in run.read_metrics() if r.get("kind") == "round"), default=0)
    bar = RoundProgress(cfg.name, cfg.federation.rounds, done, enabled=progress).attach(run)
    try:
        summary = _execute(config, cfg, run, resume, eng)
    finally:
        bar.close()
    if plots:
        run.write_plots()
    return summary


def _execute(config: Any, cfg: FederatedRunConfig, run: RunDir, resume: bool, eng: str) -> dict[str, Any]:
    """Start the protocol the optimizer family names on engine ``eng``."""
    from fedzo.train import build_objective

    if not cfg.federation.is_zo:
        return _run_fedavg(cfg, run, resume=resume, engine=eng, fleet=fleet_of(config))
    from fedzo.federation.server import FederatedServer, GridTransport

    server = FederatedServer(cfg, run, build_objective(cfg.objective_config()), resume=resume,
                             fleet=fleet_of(config))
    if eng == "inprocess":
        from fedzo.federation.inprocess import InProcessTransport

        return server.run_all(InProcessTransport(cfg.federation.num_clients))
    return _simulate(lambda grid: server.run_all(GridTransport(grid)), cfg, run)


def run_on_grid(config: Any, out: str | os.PathLike[str], grid: Any, *, resume: bool = False,
                force: bool = False) -> dict[str, Any]:
    """Run a scenario over an existing Flower ``grid`` (the deployment engine's ServerApp).

    Nodes may sit on other machines: they cannot read this run's update log, so the
    setup sent to them names none and each node keeps its synced model in its own
    on-disk cache (:mod:`fedzo.federation.nodecache`) between rounds.
    """
    from fedzo.federation.client import ClientSetup, config_digest
    from fedzo.federation.server import FederatedServer, GridTransport
    from fedzo.train import build_objective

    cfg, run = _prepare(config, out, resume, force)
    if not cfg.federation.is_zo:
        from fedzo.federation.fedavg import run_fedavg

        return run_fedavg(cfg, run, grid, resume=resume, engine="deployment", fleet=fleet_of(config))
    server = FederatedServer(cfg, run, build_objective(cfg.objective_config()), resume=resume,
                             fleet=fleet_of(config))
    # FederatedServer's setup names the run's log (the same-machine re-sync shortcut);
    # a deployment must not rely on it.
    server.setup_json = ClientSetup(cfg, None).to_json()
    server.digest = config_digest(server.setup_json)
    return server.run_all(GridTransport(grid))


def _run_fedavg(cfg: FederatedRunConfig, run: RunDir, *, resume: bool, engine: str,
                fleet: Any | None = None) -> dict[str, Any]:
    """The FedAvg backprop baseline (``fo-sgd``/``fo-adam``) on the in-process or Ray engine."""
    from fedzo.federation.fedavg import run_fedavg

    if engine == "inprocess":
        from fedzo.federation.inprocess import InProcessGrid, InProcessTransport

        grid = InProcessGrid(InProcessTransport(cfg.federation.num_clients))
        return run_fedavg(cfg, run, grid, resume=resume, engine=engine, fleet=fleet)
    return _simulate(lambda grid: run_fedavg(cfg, run, grid, resume=resume, engine=engine, fleet=fleet),
                     cfg, run)


def _simulate(drive: Callable[[Any], dict[str, Any]], cfg: FederatedRunConfig, run: RunDir) -> dict[str, Any]:
    """Flower's simulation engine (Ray): the ServerApp calls ``drive(grid)``."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from fedzo.federation.client import app as client_app

    result: dict[str, Any] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        result.update(drive(grid))

    cpus = os.cpu_count() or 1
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=cfg.federation.num_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": min(2, cpus)}})
    if not result:
        raise ConfigError(f"the simulation ended without a result; see the log in {Path(run.path)}")
    return result
