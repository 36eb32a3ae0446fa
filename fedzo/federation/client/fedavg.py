"""The FedAvg backprop baseline, client side: the local training (its messages:
:mod:`fedzo.federation.wire.fedavg`).

Local training: ``fo_local_epochs`` epochs over the client's partition (``local_steps``
is the ZO protocol's K and is not used here), ``batch_size`` examples per backprop step,
the partition shuffled per epoch by a seed of (run seed, round, client, epoch)
(:func:`fedzo.federation.batches.epoch_batches`). The optimiser (``fo-sgd`` or ``fo-adam``)
starts fresh every round, as in plain FedAvg: nothing but the global weights carries over
between rounds, so nothing leaks between virtual clients sharing a worker.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Any

from flwr.app import RecordDict

from fedzo.federation.batches import epoch_batches
from fedzo.federation.client.memory import peak_memory_bytes
from fedzo.federation.wire.fedavg import (
    ARRAYS_KEY,
    CONFIG_KEY,
    LR_KEY,
    ROUND_KEY,
    FedAvgMessageError,
    build_reply,
    check_arrays,
    load_arrays,
    params_to_arrays,
)
from fedzo.killpoints import kill_point
from fedzo.zo.first_order import FOTrainer


def train_local(worker: Any, client: int, content: RecordDict) -> RecordDict:
    """Load the global tensors into ``worker``'s model, train ``fo_local_epochs`` epochs on
    ``client``'s partition with backprop, and return the reply."""
    sc = worker.scenario
    fed = sc.federation
    if not 0 <= client < fed.num_clients:
        raise FedAvgMessageError(f"partition-id {client} is out of range; allowed: 0..{fed.num_clients - 1}")
    t0 = time.perf_counter()
    cfg = content.config_records[CONFIG_KEY]
    round_, lr = cfg.get(ROUND_KEY), cfg.get(LR_KEY)
    if not isinstance(round_, int) or not isinstance(lr, float):
        raise FedAvgMessageError(f"config record has {ROUND_KEY}={round_!r}, {LR_KEY}={lr!r}; expected an int and a float")
    if ARRAYS_KEY not in content.array_records:
        raise FedAvgMessageError(f"FedAvg train message without ArrayRecord {ARRAYS_KEY!r}")
    check_arrays(worker.work, content.array_records[ARRAYS_KEY], "downlink")
    load_arrays(worker.work, content.array_records[ARRAYS_KEY])
    kill_point("client-caught-up", round_)
    obj = worker.objective
    clf = obj.classifier
    trainer = FOTrainer(clf, sc.optimizer.name, lr)
    losses: list[float] = []
    examples = 0
    for epoch in range(fed.fo_local_epochs):
        for idx in epoch_batches(worker.partitions[client], sc.data.batch_size, sc.seed, round_, client, epoch):
            picked = [obj.train[i] for i in idx]
            batch = next(iter(clf.batches(picked, len(picked)))).to(obj.device)
            losses.append(trainer.step(partial(clf.loss, batch), lr))
            examples += len(idx)
    if not losses:
        raise FedAvgMessageError(f"client {client} has an empty partition; nothing to train on")
    loss = sum(losses) / len(losses)
    if not math.isfinite(loss):
        raise FedAvgMessageError(f"client {client}: non-finite training loss")
    kill_point("client-trained", round_)
    return build_reply(params_to_arrays(worker.work), examples, loss, time.perf_counter() - t0,
                       peak_memory_bytes(obj.device))
