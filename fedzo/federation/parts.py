"""The parts of a federated run, built once from its :class:`~fedzo.config.scenario.Scenario`.

:func:`build_parts` is the one builder: the server (:func:`fedzo.federation.run.build_engine`),
every worker (:class:`fedzo.federation.client.worker.Worker`, from the scenario its handshake
carries) and a rebuild of the global model (``fedzo evaluate --run``) call it, and hand on the
parts rather than the scenario. So the recipe of the global model's copy (a replaying
perturber with the mask drawn from the initial weights, under the run's server optimizer) and
of the clients' partitions exists once, and all parties agree bitwise.

The run's fleet plan and clock are the server's alone: it builds them from these parts and the
run directory's calibration (:func:`fedzo.federation.fleet.plan_fleet`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from fedzo.config.federation import FederationConfig
from fedzo.config.scenario import Scenario
from fedzo.federation.catchup import CatchUpPolicy, make_policy
from fedzo.tasks.objective import Objective, build_objective
from fedzo.tasks.partition import partition
from fedzo.zo import EstimatorConfig, ParamSet, Perturber, PerturberRecipe
from fedzo.zo.server_optimizers import ServerOptimizer, make_server_optimizer
from fedzo.zo_parts import estimator_config, perturber_recipe


@dataclass(frozen=True)
class RunParts:
    """What a party of a federated run works with: the objective, how its perturbers are
    built, the estimator, each client's training examples, and factories of the catch-up
    policy and the server optimizer (both keep state, so each user gets its own)."""

    objective: Objective
    perturbers: PerturberRecipe
    estimator: EstimatorConfig  # the scenario's; a train message carries its own eps and q
    partitions: list[list[int]]  # client -> its training examples
    catch_up: Callable[[], CatchUpPolicy]
    server_optimizer: Callable[[Perturber], ServerOptimizer]

    def global_model(self, params: ParamSet, *, like: Perturber | None = None) -> ServerOptimizer:
        """The run's server optimizer over ``params``, a copy of the global model that replays
        the update log (the server's own, a client's clean copy, a rebuild). Build it while
        ``params`` hold the initial weights, or give ``like``, a perturber built so, whose
        mask it shares."""
        return self.server_optimizer(self.perturbers.build(params, like=like, replay=True))


def client_partitions(fed: FederationConfig, seed: int, objective: Objective) -> list[list[int]]:
    """Each client's training examples (the split the clients train on and the server prices)."""
    labels = [int(e.label) for e in objective.train]
    return partition(labels, fed.num_clients, fed.partition, alpha=fed.partition_alpha, seed=seed)


def build_parts(scenario: Scenario) -> RunParts:
    """The parts of ``scenario``'s run (builds its objective: the model and the data)."""
    fed, so = scenario.federation, scenario.federation.server_optimizer
    objective = build_objective(scenario.model, scenario.data, scenario.runtime, scenario.seed)
    return RunParts(
        objective=objective,
        perturbers=perturber_recipe(scenario.zo, scenario.seed),
        estimator=estimator_config(scenario.zo),
        partitions=client_partitions(fed, scenario.seed, objective),
        catch_up=partial(make_policy, fed.catch_up, scenario.seed, fed.seed_pool_size),
        server_optimizer=partial(make_server_optimizer, so.name, **so.hyperparameters()),
    )
