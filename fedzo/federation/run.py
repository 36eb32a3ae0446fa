"""``run_federated``: one federated scenario into a run directory, on any engine, resumable."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedzo.calibration.resolve import run_calibration
from fedzo.config.federation import SimulationConfig
from fedzo.config.scenario import Scenario, batched_measured_problem, scenario_from_dict
from fedzo.errors import ConfigError
from fedzo.federation.fleet import plan_fleet
from fedzo.federation.logserver import ACTOR_PREFIX, new_actor_ref, serve_log
from fedzo.federation.parts import build_parts
from fedzo.federation.progress import Mode, RoundProgress
from fedzo.federation.server.engine import RoundEngine
from fedzo.federation.transports.base import GridTransport, Transport
from fedzo.records import Summary
from fedzo.registry import Registry
from fedzo.runs import RunDir, discarded_on_failure, never_started, open_run


def _stored(data: dict[str, Any], source: str) -> Scenario:
    return scenario_from_dict(data, source, kind="run")


def prepare_run(scenario: Scenario, out: str | os.PathLike[str], *, resume: bool, force: bool) -> RunDir:
    """The run directory of ``scenario`` (fresh, or opened for resume after checking the
    stored configuration; only the engine may differ)."""
    run = open_run(out, scenario, "federated", resume=resume, force=force, stored=_stored,
                   ignore=("federation.engine",))
    if scenario.runtime.threads:
        import torch

        torch.set_num_threads(scenario.runtime.threads)
    return run


def build_engine(scenario: Scenario, run: RunDir, *, engine: str, resume: bool,
                 resync_log: str | None) -> RoundEngine[Any]:
    """The round engine of ``scenario`` with the protocol its optimizer picks, opened (resumed):
    the run's parts (:func:`~fedzo.federation.parts.build_parts`), then its fleet plan."""
    parts = build_parts(scenario)
    calibration, source = run_calibration(run.path, scenario.fleet.calibration if scenario.fleet else None,
                                          resume=resume)
    plan = plan_fleet(scenario, parts, calibration=calibration, calibration_source=source)
    protocol: Any
    if scenario.is_zo:
        from fedzo.federation.server.protocols.zo import ZOProtocol

        protocol = ZOProtocol(scenario, parts, plan.clock, resync_log=resync_log)
    else:
        from fedzo.federation.server.protocols.fedavg import FedAvgProtocol

        protocol = FedAvgProtocol(scenario, parts.objective, parts.partitions)
    eng = RoundEngine(scenario, run, plan, protocol, engine=engine)
    eng.open(resume)
    return eng


def run_federated(scenario: Scenario, out: str | os.PathLike[str], *, resume: bool = False,
                  force: bool = False, engine: str | None = None, progress: Mode = "none",
                  plots: bool = False) -> Summary:
    """Run (or resume) a federated scenario into ``out``; returns the summary.

    ``engine`` overrides ``federation.engine`` (inprocess | batched | simulation). The optimizer
    picks the protocol: ``zo-*`` seeds and scalars, ``fo-*`` the FedAvg backprop baseline.
    ``progress``: a bar over rounds, one line per round, or nothing; ``plots`` writes
    ``out/plots`` at the end.
    """

    eng_name = engine or scenario.federation.engine
    if eng_name not in ENGINES:
        raise ConfigError(f"federation.engine: {eng_name!r} cannot be started from run_federated; allowed: "
                          f"{', '.join(ENGINES.names())} (deployment: scripts/deploy_local.sh)")
    if eng_name == "batched" and scenario.fleet is not None and scenario.fleet.compute_model == "measured":
        raise ConfigError(batched_measured_problem())
    if eng_name == "simulation" and (address := attached_to_cluster(scenario.federation.simulation)):
        check_cluster_reachable(address)
        check_cluster_resources(scenario.federation.simulation, address)
    if resume:
        never_started(out)
    run = prepare_run(scenario, out, resume=resume, force=force)
    done = max((r.round for r in run.rounds()), default=0)
    bar = RoundProgress(scenario.name, scenario.federation.rounds, done, mode=progress).attach(run)
    try:
        log_ref = _update_log_ref(scenario, eng_name, run)
        with discarded_on_failure(run, fresh=not resume):
            eng = build_engine(scenario, run, engine=eng_name, resume=resume, resync_log=log_ref)
        summary = ENGINES.get(eng_name)(scenario, eng, run, log_ref)
    finally:
        bar.close()
    if plots:
        run.write_plots()
    return summary


Runner = Callable[[Scenario, RoundEngine[Any], RunDir, str], Summary]  # (scenario, loop, run, log ref)
ENGINES: Registry[Runner] = Registry("engine", "federation.engine")  # those run_federated starts


@ENGINES.register("inprocess")
def _inprocess(scenario: Scenario, eng: RoundEngine[Any], run: RunDir, log_ref: str) -> Summary:
    from fedzo.federation.transports.inprocess import InProcessTransport

    return eng.run_all(InProcessTransport(scenario.federation.num_clients))


@ENGINES.register("batched")
def _batched(scenario: Scenario, eng: RoundEngine[Any], run: RunDir, log_ref: str) -> Summary:
    from fedzo.federation.transports.batched import BatchedTransport

    return eng.run_all(BatchedTransport(scenario.federation.num_clients, scenario.federation.batched))


@ENGINES.register("simulation")
def _simulation(scenario: Scenario, eng: RoundEngine[Any], run: RunDir, log_ref: str) -> Summary:
    return _simulate(lambda grid: eng.run_all(GridTransport(grid)), scenario, run, log_ref)


def _update_log_ref(scenario: Scenario, engine: str, run: RunDir) -> str:
    """Where the clients re-sync from: the update log's path for clients that share this
    machine's filesystem, and a Ray actor (:mod:`fedzo.federation.logserver`) for a
    simulation attached to a Ray cluster, whose workers may sit on other machines."""
    if engine == "simulation" and attached_to_cluster(scenario.federation.simulation):
        return new_actor_ref()
    return str(run.log_path)


def attached_to_cluster(sim: SimulationConfig) -> str | None:
    """The Ray cluster a simulation attaches to (``address``, else ``$RAY_ADDRESS``), or None."""
    return sim.address or os.environ.get("RAY_ADDRESS") or None


def check_cluster_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse, before any round, a ``host:port`` cluster address nothing answers at (Ray
    itself retries for minutes and then exits). ``auto`` is left to Ray to resolve."""
    if address == "auto":
        return
    where = "federation.simulation.address" if not os.environ.get("RAY_ADDRESS") else "$RAY_ADDRESS"
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{where}: {address!r} is not a Ray cluster address; allowed: 'auto' or the head's "
                          "host:port (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(f"{where}: no Ray head answers at {address} ({exc}); start it with "
                          f"`ray start --head --port {port}` on that machine, or fix the address") from None


def unsatisfiable(sim: SimulationConfig, nodes: list[dict[str, Any]]) -> str | None:
    """Why no node of an attached Ray cluster can hold one client (``num_cpus`` and
    ``num_gpus`` per client), from ``ray.nodes()``; None when one can. Ray would otherwise
    log "ActorPool is empty" and wait until the setup timeout."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    if not alive:
        return "the cluster has no live node"
    need = {"CPU": sim.num_cpus, "GPU": sim.num_gpus}
    if any(all(r.get(k, 0.0) >= v for k, v in need.items() if v > 0) for r in alive):
        return None
    best = {k: max(r.get(k, 0.0) for r in alive) for k in need}
    return (f"a client asks for {sim.num_cpus:g} CPU and {sim.num_gpus:g} GPU (federation.simulation.num_cpus, "
            f"num_gpus) but no node of the cluster has that much (largest: {best['CPU']:g} CPU, "
            f"{best['GPU']:g} GPU); lower them, or add such a node")


def check_cluster_resources(sim: SimulationConfig, address: str) -> None:
    """Refuse, within seconds, a simulation whose clients no node of the cluster can hold."""
    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        why = unsatisfiable(sim, ray.nodes())
    finally:
        ray.shutdown()
    if why:
        raise ConfigError(f"federation.simulation: {why}")


def run_on_grid(scenario: Scenario, out: str | os.PathLike[str], grid: Any, *, resume: bool = False,
                force: bool = False) -> Summary:
    """Run a scenario over an existing Flower ``grid`` (the deployment engine's ServerApp).

    Nodes may sit on other machines: they cannot read this run's update log, so the
    setup sent to them names none and each node keeps its synced model in its own
    on-disk cache (:mod:`fedzo.federation.client.nodecache`) between rounds.
    """
    if resume:
        never_started(out)
    run = prepare_run(scenario, out, resume=resume, force=force)
    with discarded_on_failure(run, fresh=not resume):
        eng = build_engine(scenario, run, engine="deployment", resume=resume, resync_log=None)
    transport: Transport = GridTransport(grid, nodes_restart=True)
    return eng.run_all(transport)


def backend_config(sim: SimulationConfig, *, gpus: int | None = None) -> dict[str, Any]:
    """Flower's Ray backend settings for ``federation.simulation``.

    Attached to a cluster (``address``, or ``$RAY_ADDRESS``), only the per-client
    resources are given: Ray refuses local resource counts there. A local Ray gets
    ``max_concurrent x num_cpus`` CPUs (so at most ``max_concurrent`` clients run at once)
    and, when clients ask for GPUs, the ``gpus`` CUDA devices present (default: counted).
    """
    client = {"num_cpus": sim.num_cpus, "num_gpus": sim.num_gpus}
    address = attached_to_cluster(sim)
    if address:
        return {"client_resources": client, "init_args": {"address": address}}
    if sim.num_gpus > 0:
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus == 0:
            raise ConfigError(f"federation.simulation.num_gpus: {sim.num_gpus:g} asks for a GPU per client but "
                              "this machine has no CUDA device; set num_gpus: 0, or attach to a cluster with GPUs "
                              "(federation.simulation.address)")
        if sim.num_gpus > gpus:
            raise ConfigError(f"federation.simulation.num_gpus: {sim.num_gpus:g} per client is more than the {gpus} "
                              f"CUDA device(s) of this machine, so no worker could hold a client; use at most {gpus} "
                              "(a fraction lets several clients share one GPU)")
    return {"client_resources": client,
            "init_args": {"num_cpus": round(sim.max_concurrent * sim.num_cpus), "num_gpus": gpus or 0}}


def _simulate(drive: Callable[[Any], Summary], scenario: Scenario, run: RunDir, log_ref: str) -> Summary:
    """Flower's simulation engine (Ray): the ServerApp calls ``drive(grid)``, serving the
    update log first when ``log_ref`` names an actor."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    from flwr.app import Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from fedzo.federation.client.worker import app as client_app

    result: list[Summary] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        server = serve_log(log_ref, run.log_path) if log_ref.startswith(ACTOR_PREFIX) else None
        result.append(drive(grid))
        del server  # the actor lives as long as its handle

    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=scenario.federation.num_clients,
                   backend_config=backend_config(scenario.federation.simulation))
    if not result:
        raise ConfigError(f"the simulation ended without a result; see the log in {Path(run.path)}")
    return result[0]
