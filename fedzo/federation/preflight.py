"""Preflight: open what a run will open, before it runs, and report every problem at once.

``fedzo validate`` checks a scenario's schema; the preflight goes on to what only the
machine can answer, each part on its own so that one problem does not hide the next:

* ``device``: the training device exists here (``runtime.device: cuda`` on a machine
  without CUDA fails here, not after the model loaded);
* ``task``: the data opens, its text and label columns are found, its labels and split
  sizes are as the run will see them;
* ``fleet``: the device profiles and the calibration file read;
* ``model``: the model, its tokenizer, the prompt and verbalizer, the PEFT wrapping, the
  memory check of every profile and the calibration group that prices the steps, by
  building the run's objective, fleet plan and clock exactly as ``fedzo run`` does (only
  when ``device`` and ``task`` passed). It takes about as long as a run's setup.

What only remote nodes can open (a deployment run's SuperNodes) is reported as not
checked here, never as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fedzo.config.scenario import Scenario
from fedzo.errors import ConfigError, FedzoError

Status = Literal["ok", "error", "not checked"]


@dataclass(frozen=True)
class Check:
    """One part of the preflight and what it found."""

    part: str
    status: Status
    detail: str

    def line(self) -> str:
        """``  task: ok, 7000 train / 500 dev / 1000 test ...``."""
        return f"  {self.part}: {self.status}, {self.detail}"


def _attempt(part: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(part, "ok", probe())
    except FedzoError as exc:
        return Check(part, "error", str(exc))
    except (OSError, ValueError, RuntimeError, ImportError) as exc:  # third-party loaders' own errors
        return Check(part, "error", f"{type(exc).__name__}: {exc}")


def _device(scenario: Scenario) -> str:
    from fedzo.tasks.objective import resolve_device, resolve_dtype

    device = resolve_device(scenario.runtime.device)
    resolve_dtype(scenario.model.dtype, device)
    return f"training on {device} in {scenario.model.dtype}"


def _task(scenario: Scenario) -> str:
    from fedzo.tasks.registry import load_task

    data = scenario.data
    task = load_task(data.task, seed=scenario.seed, options=data.task_options())
    train = len(task.train[: data.train_examples] if data.train_examples else task.train)
    split = task.dev if data.eval_split == "dev" else task.test
    evals = len(split[: data.eval_examples] if data.eval_examples else split)
    n = scenario.federation.num_clients
    if train < n:
        raise ConfigError(f"data.train_examples: {train} training examples for federation.num_clients {n}; "
                         "every client needs at least one")
    return (f"{task.name}: {len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test; the run trains "
            f"on {train} and evaluates on {evals} {data.eval_split}; labels {', '.join(task.label_names)}")


def _fleet(scenario: Scenario) -> str:
    from fedzo.calibration.model import load_calibration
    from fedzo.calibration.resolve import calibration_path
    from fedzo.devices.profiles import load_profiles
    from fedzo.federation.fleet import describe_fleet

    if scenario.fleet is not None:
        load_profiles()
        if scenario.fleet.calibration:
            load_calibration(calibration_path(scenario.fleet.calibration))
    return describe_fleet(scenario).removeprefix("fleet: ")


def _model(scenario: Scenario) -> str:
    from fedzo.calibration.model import load_calibration
    from fedzo.calibration.resolve import calibration_path
    from fedzo.federation.fleet import plan_fleet
    from fedzo.federation.parts import build_parts
    from fedzo.units import format_bytes
    from fedzo.zo.params import ParamSet

    parts = build_parts(scenario)
    objective, params = parts.objective, ParamSet.from_module(parts.objective.classifier)
    value = scenario.fleet.calibration if scenario.fleet else None
    source = str(calibration_path(value)) if value else ""
    plan = plan_fleet(scenario, parts, calibration=load_calibration(source) if value else None,
                      calibration_source=source)
    plan.clock  # noqa: B018 - builds the clock as a run does: a missing calibration group is an error here
    prompt = getattr(getattr(objective.classifier, "prompt", None), "name", None)
    fits = ", ".join(f"{name} {format_bytes(rep.needed)} of {format_bytes(rep.budget)}"
                     f"{'' if rep.fits else ' (does not fit: excluded)'}" for name, rep in plan.fits.items())
    return (f"{scenario.model.name}: {plan.shape.n_params / 1e6:.1f} M parameters, {params.numel:,} trained"
            f"{f', prompt template {prompt!r}' if prompt else ''}; modelled peak memory per client: {fits}")


def preflight(scenario: Scenario) -> list[Check]:
    """Every part of the preflight of ``scenario``, in order."""
    checks = [_attempt("device", lambda: _device(scenario)), _attempt("task", lambda: _task(scenario)),
              _attempt("fleet", lambda: _fleet(scenario))]
    if all(c.status == "ok" for c in checks[:2]):
        checks.append(_attempt("model", lambda: _model(scenario)))
    else:
        checks.append(Check("model", "not checked", "needs the device and the task first"))
    if scenario.federation.engine == "deployment":
        checks.append(Check("nodes", "not checked", "a deployment run's SuperNodes open the model and data on "
                            "their own machines; each reports its problems when it registers, before round 1"))
    return checks
