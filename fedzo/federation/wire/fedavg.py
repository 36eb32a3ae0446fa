"""The FedAvg backprop baseline's wire schema, both sides (the server drives it,
:mod:`fedzo.federation.server.protocols.fedavg`; the client trains,
:mod:`fedzo.federation.client.fedavg`). The messages follow Flower's built-in ``FedAvg``
strategy::

    downlink  "arrays"   ArrayRecord   the global trainable tensors (by parameter name)
              "config"   ConfigRecord  server-round, fz-lr (this round's lr),
                                       fz-digest (the run configuration's digest)
    uplink    "arrays"   ArrayRecord   the client's trained tensors (same names/shapes)
              "metrics"  MetricRecord  num-examples (FedAvg's weight), train-loss,
                                       compute-seconds, peak-memory-bytes

bfloat16 tensors travel as float32 (numpy has no bfloat16) and are cast back on load.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedzo.federation.wire.messages import MessageError
from fedzo.zo import ParamSet

ARRAYS_KEY = "arrays"  # Flower FedAvg's default arrayrecord_key
CONFIG_KEY = "config"  # Flower FedAvg's default configrecord_key
METRICS_KEY = "metrics"
WEIGHT_KEY = "num-examples"  # Flower FedAvg's default weighted_by_key
ROUND_KEY = "server-round"  # injected by Flower's FedAvg.configure_train
LR_KEY = "fz-lr"
DIGEST_KEY = "fz-digest"


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
