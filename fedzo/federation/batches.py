"""Which examples a client trains on in each local step (or FedAvg epoch), and the shape
of that batch.

The client (to train) and the server (to price the client's work on the clock) call the
same functions, so the simulated time of a client-round is priced from the very batches
the client used: their rows and their padded width.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from fedzo.tasks.classifiers import Classifier
from fedzo.tasks.types import Example
from fedzo.zo.seeds import BATCH_TAG, derive_seed

EPOCH_TAG = 0xFEDA  # the shuffle of a FedAvg client's epoch: (run seed, round, client, epoch)


def local_batch(partition: Sequence[int], batch_size: int, seed: int, round_: int, client: int,
                step: int) -> list[int]:
    """The example indices of local step ``step``: a pure function of (seed, round, client, step)."""
    rng = random.Random(derive_seed(seed, BATCH_TAG, round_, client, step))
    return rng.sample(list(partition), min(batch_size, len(partition)))


def local_examples(train: Sequence[Example], partition: Sequence[int], batch_size: int, seed: int, round_: int,
                   client: int, step: int) -> list[Example]:
    """The examples of local step ``step`` (:func:`local_batch`'s indices into ``train``)."""
    return [train[i] for i in local_batch(partition, batch_size, seed, round_, client, step)]


def batch_shape(clf: Classifier, examples: Sequence[Example]) -> tuple[int, int]:
    """(rows, padded width) of the batch ``clf`` makes of ``examples`` (from the cached
    encodings: no batch is built)."""
    return len(examples), clf.padded_width(examples)


def epoch_batches(partition: list[int], batch_size: int, run_seed: int, round_: int, client: int,
                  epoch: int) -> list[list[int]]:
    """The example indices of each step of one local epoch (a pure function of the seeds)."""
    order = list(partition)
    random.Random(derive_seed(run_seed, EPOCH_TAG, round_, client, epoch)).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
