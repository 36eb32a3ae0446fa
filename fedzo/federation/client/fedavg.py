"""The FedAvg backprop baseline, client side: its wire schema and the local training.

The messages follow Flower's built-in ``FedAvg`` strategy (the server drives it, see
:mod:`fedzo.federation.protocols.fedavg`)::

    downlink  "arrays"   ArrayRecord   the global trainable tensors (by parameter name)
              "config"   ConfigRecord  server-round, fz-lr (this round's lr),
                                       fz-digest (the run configuration's digest)
    uplink    "arrays"   ArrayRecord   the client's trained tensors (same names/shapes)
              "metrics"  MetricRecord  num-examples (FedAvg's weight), train-loss,
                                       compute-seconds, peak-memory-bytes

Local training: ``fo_local_epochs`` epochs over the client's partition (``local_steps``
is the ZO protocol's K and is not used here), ``batch_size`` examples per backprop step,
the partition shuffled per epoch by a seed of (run seed, round, client, epoch). The
optimiser (``fo-sgd`` or ``fo-adam``) starts fresh every round, as in plain FedAvg:
nothing but the global weights carries over between rounds, so nothing leaks between
virtual clients sharing a worker.

bfloat16 tensors travel as float32 (numpy has no bfloat16) and are cast back on load.
"""

from __future__ import annotations

import math
import random
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedzo.federation.client.memory import peak_memory_bytes
from fedzo.federation.wire.messages import MessageError
from fedzo.killpoints import kill_point
from fedzo.zo import ParamSet, derive_seed
from fedzo.zo.first_order import FOTrainer

ARRAYS_KEY = "arrays"  # Flower FedAvg's default arrayrecord_key
CONFIG_KEY = "config"  # Flower FedAvg's default configrecord_key
METRICS_KEY = "metrics"
WEIGHT_KEY = "num-examples"  # Flower FedAvg's default weighted_by_key
ROUND_KEY = "server-round"  # injected by Flower's FedAvg.configure_train
LR_KEY = "fz-lr"
DIGEST_KEY = "fz-digest"
EPOCH_TAG = 0xFEDA


class FedAvgMessageError(MessageError):
    """A FedAvg message or reply does not match the model (names, shapes, finiteness)."""


def is_fedavg_downlink(content: RecordDict) -> bool:
    """Whether a message body is a FedAvg train message (not a seeds-and-scalars one)."""
    return CONFIG_KEY in content.config_records and DIGEST_KEY in content.config_records[CONFIG_KEY]


def params_to_arrays(params: ParamSet) -> ArrayRecord:
    """The tensors of ``params`` as an ArrayRecord (bfloat16 widened to float32)."""
    out = {}
    for name, t in zip(params.names, params.tensors, strict=True):
        x = t.detach().cpu()
        if x.dtype == torch.bfloat16:
            x = x.float()
        out[name] = Array(np.ascontiguousarray(x.numpy()))
    return ArrayRecord(out)


def check_arrays(params: ParamSet, record: ArrayRecord, who: str) -> None:
    """Raise :class:`FedAvgMessageError` unless ``record`` has exactly the tensors of
    ``params`` (names, shapes) with finite values."""
    names = set(record.keys())
    if names != set(params.names):
        missing = sorted(set(params.names) - names)[:3]
        extra = sorted(names - set(params.names))[:3]
        raise FedAvgMessageError(f"{who}: tensors do not match the model (missing {missing}, unexpected {extra})")
    for name, t in zip(params.names, params.tensors, strict=True):
        a = record[name]
        if tuple(a.shape) != tuple(t.shape):
            raise FedAvgMessageError(f"{who}: tensor {name!r} has shape {tuple(a.shape)}; expected {tuple(t.shape)}")
        if not np.isfinite(a.numpy()).all():
            raise FedAvgMessageError(f"{who}: tensor {name!r} has non-finite values")


def load_arrays(params: ParamSet, record: ArrayRecord) -> None:
    """Copy an ArrayRecord into ``params`` (exact; cast back to each tensor's dtype)."""
    params.load({n: torch.from_numpy(record[n].numpy().copy()).to(t.dtype)
                 for n, t in zip(params.names, params.tensors, strict=True)})


def build_train_config(round_: int, lr: float, digest: str) -> ConfigRecord:
    """The ConfigRecord of a round (``server-round`` is also set by Flower's FedAvg)."""
    return ConfigRecord({ROUND_KEY: int(round_), LR_KEY: float(lr), DIGEST_KEY: digest})


def build_reply(arrays: ArrayRecord, examples: int, loss: float, seconds: float, peak: int) -> RecordDict:
    """The uplink: trained tensors and the one MetricRecord FedAvg weights by."""
    return RecordDict({ARRAYS_KEY: arrays, METRICS_KEY: MetricRecord({
        WEIGHT_KEY: int(examples), "train-loss": float(loss), "compute-seconds": float(seconds),
        "peak-memory-bytes": int(peak)})})


def epoch_batches(partition: list[int], batch_size: int, run_seed: int, round_: int, client: int,
                  epoch: int) -> list[list[int]]:
    """The example indices of each step of one local epoch (a pure function of the seeds)."""
    order = list(partition)
    random.Random(derive_seed(run_seed, EPOCH_TAG, round_, client, epoch)).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


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
