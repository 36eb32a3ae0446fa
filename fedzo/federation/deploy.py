"""Entry points for Flower's deployment engine (``flower-superlink`` + ``flower-supernode``).

``flwr run scripts/fedzo-app <connection> --run-config 'scenario="/abs/x.yaml"'`` starts
:data:`server_app` on the SuperLink's machine; every SuperNode runs the ClientApp
:data:`fedzo.federation.client.worker.app`. The Flower app project ``scripts/fedzo-app``
(its ``pyproject.toml`` names these two objects) holds no code: fedzo must be installed
on the SuperLink's machine and on every board.

Run config (flat TOML values, the only kind ``flwr run`` passes):

    scenario  path of the scenario YAML on the SuperLink's machine (required)
    out       run directory (default: the scenario's out, else runs/<name>)
    force     overwrite an existing run directory (default false)
    resume    continue the run in ``out`` (default false)

The optimizer picks the protocol as everywhere else (``zo-*``: seeds and scalars, with
the nodes' on-disk caches standing in for the server's log; ``fo-*``: FedAvg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedzo.errors import ConfigError
from fedzo.federation.client.worker import app as client_app

__all__ = ["client_app", "read_run_config", "server_app"]


def read_run_config(run_config: dict[str, Any]) -> tuple[Path, Path | None, bool, bool]:
    """(scenario, out, force, resume) from a Flower run config; ConfigError names the key."""
    scenario = str(run_config.get("scenario", "")).strip()
    if not scenario:
        raise ConfigError("run config 'scenario' is empty; pass --run-config 'scenario=\"/abs/path.yaml\"'")
    path = Path(scenario).expanduser()
    if not path.is_file():
        raise ConfigError(f"run config scenario={scenario!r}: no such file on the SuperLink's machine "
                          "(give an absolute path)")
    out = str(run_config.get("out", "")).strip()
    flags = {}
    for key in ("force", "resume"):
        value = run_config.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"run config {key}={value!r}: expected true or false")
        flags[key] = value
    return path, Path(out).expanduser() if out else None, flags["force"], flags["resume"]


server_app = ServerApp()


@server_app.main()
def _main(grid: Grid, context: Context) -> None:
    from fedzo.config.scenario import load_scenario
    from fedzo.federation.run import run_on_grid
    from fedzo.federation.watchdog import watch_superlink

    watch_superlink()  # no orphan ServerApp when the SuperLink dies
    path, out, force, resume = read_run_config(dict(context.run_config))
    scenario = load_scenario(path)
    run_dir = out if out is not None else scenario.out_dir
    summary = run_on_grid(scenario, run_dir, grid, resume=resume, force=force)
    print(f"fedzo: run {run_dir} finished; model_sha256 {summary.model_sha256}", flush=True)
