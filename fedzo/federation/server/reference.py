"""The server's own projected gradients for a round's seeds, on a small root set it holds
(``federation.reputation_reference: server``).

FLTrust (Cao et al., NDSS 2021) gives the server a small clean training set, the *root
set*, and trusts a client as far as its update points the way the server's own update on
that set does. Under seeds and scalars the server's update is cheap: for the round's K
step seeds it runs the very K local ZO steps a client runs (the same estimator, eps, q
and lr), on the root set instead of a client's minibatch, from ``global(r - 1)``, and
restores the weights afterwards: ``2 x K x q`` forward passes of ``reference_examples``
rows per round, no gradient, no extra state but one copy of the trainable weights.

Those K x q scalars are the reference of :func:`fedzo.federation.server.reputation.round_votes`:
a client's vote on seed ``j`` is ``sign(s_j) x sign(r_j)``. Unlike the median of the
other clients' scalars, the reference does not shrink as attackers grow in number: with
30 % of the clients flipping their signs the others' median keeps only about 40 % of the
honest signal, the root set all of it.

The root set is ``reference_examples`` examples of the training split drawn with the run
seed (they may also sit in a client's partition: the server is assumed to have collected
data from the same distribution, as in FLTrust). The simulated clock does not price the
server's compute (nor its aggregation); each round records the host seconds the reference
took (``reference_seconds``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import torch

from fedzo.tasks.objective import Objective
from fedzo.zo import DirectionalLoss, EstimatorConfig, ParamSet, Perturber, make_zo_optimizer, module_along, zo_step
from fedzo.zo.seeds import derive_seed

ROOT_TAG = 0x2007  # the root set's draw from the run seed


def root_indices(seed: int, train_size: int, examples: int) -> list[int]:
    """The training examples the server holds: ``examples`` of ``train_size``, drawn with ``seed``."""
    rng = random.Random(derive_seed(seed, ROOT_TAG))
    return sorted(rng.sample(range(train_size), min(examples, train_size)))


class ServerReference:
    """Runs a round's K local ZO steps on the root set and restores the global weights."""

    def __init__(self, objective: Objective, params: ParamSet, perturber: Perturber, *, seed: int,
                 examples: int, estimator: EstimatorConfig, optimizer: str) -> None:
        """``estimator``: the run's (its estimator, eps and q, as the round's train messages carry)."""
        self.objective, self.params, self.perturber = objective, params, perturber
        root = [objective.train[i] for i in root_indices(seed, len(objective.train), examples)]
        self.batch = next(iter(objective.classifier.batches(root, len(root)))).to(objective.device)  # once a run
        self.estimator, self.optimizer = estimator, optimizer
        self.seconds = 0.0  # host seconds of the latest call

    def scalars(self, seeds: Sequence[int], lr: float) -> tuple[float, ...]:
        """The server's K x q projected gradients for ``seeds`` from the current weights, which
        are left exactly as they were."""
        t0 = time.perf_counter()
        clf, batch = self.objective.classifier, self.batch

        def loss() -> float:
            with torch.no_grad():
                return float(clf.loss(batch))

        est = self.estimator
        along = module_along(clf, self.params, lambda: clf.loss(batch)) if est.tangent_forwards_per_step else None
        opt = make_zo_optimizer(self.optimizer)
        before = self.params.snapshot()
        out: list[float] = []
        try:
            for seed in seeds:
                out.extend(zo_step(self.perturber, DirectionalLoss(loss, along), seed, est, opt, lr).grads)
        finally:
            self.params.load(before)
        self.seconds = time.perf_counter() - t0
        return tuple(out)
