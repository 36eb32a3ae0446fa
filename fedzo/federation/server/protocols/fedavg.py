"""The FedAvg backprop baseline, server side, as a round-engine plug-in.

``optimizer.name: fo-sgd | fo-adam`` switches a scenario from seeds and scalars to
FedAvg with backprop: each round the server sends the dense trainable tensors (full
model or LoRA adapters, per ``model.peft``) as an ArrayRecord; each kept client trains
``fo_local_epochs`` epochs on its partition (:mod:`fedzo.federation.client.fedavg`) and
returns its tensors; they are averaged weighted by ``num-examples`` with Flower's own
``aggregate_arrayrecords`` (what Flower's ``FedAvg`` strategy calls), on the replies
sorted by client id so the float sums never depend on arrival order.

The message schema follows Flower's ``FedAvg`` (``arrays``, ``config``, ``metrics``), so the
same ClientApp could serve Flower's strategy. The global tensors are checkpointed in
``state/`` after every round's records, so a killed run resumes with the same result.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedzo.config.scenario import Scenario
from fedzo.devices.clock import ClientWork
from fedzo.federation.batches import batch_shape, epoch_batches
from fedzo.federation.server.protocols.base import Outgoing
from fedzo.federation.setup import ClientSetup
from fedzo.federation.wire.fedavg import (
    ARRAYS_KEY,
    CONFIG_KEY,
    METRICS_KEY,
    WEIGHT_KEY,
    FedAvgMessageError,
    build_train_config,
    check_arrays,
    load_arrays,
    params_to_arrays,
)
from fedzo.federation.wire.messages import MessageError
from fedzo.killpoints import kill_point
from fedzo.records import ClientRecord
from fedzo.runs import RunDir
from fedzo.tasks.objective import Objective
from fedzo.zo import ParamSet, Schedule, param_digest

CHECKPOINT = "fedavg_global.safetensors"


@dataclass(frozen=True)
class FedAvgUpdate:
    """A checked FedAvg reply."""

    content: RecordDict
    num_examples: int
    train_loss: float
    compute_seconds: float
    peak_memory_bytes: int


def check_reply(params: ParamSet, content: RecordDict) -> FedAvgUpdate:
    """A FedAvg reply as an update; raises :class:`FedAvgMessageError`."""
    if list(content.array_records) != [ARRAYS_KEY] or list(content.metric_records) != [METRICS_KEY]:
        raise FedAvgMessageError(f"reply has records {list(content)}; expected {ARRAYS_KEY!r} and {METRICS_KEY!r}")
    check_arrays(params, content.array_records[ARRAYS_KEY], "reply")
    m = dict(content.metric_records[METRICS_KEY])
    n = m.get(WEIGHT_KEY)
    if not isinstance(n, int) or n < 1:
        raise FedAvgMessageError(f"reply reports {WEIGHT_KEY}={n!r}; expected an int >= 1")
    return FedAvgUpdate(content, n, _number(m, "train-loss", None), _number(m, "compute-seconds", 0.0),
                        int(_number(m, "peak-memory-bytes", 0)))


def _number(metrics: dict[str, Any], key: str, default: float | None) -> float:
    value = metrics.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FedAvgMessageError(f"reply reports {key}={value!r}; expected a number")
    return float(value)


class FedAvgProtocol:
    """Server state of a FedAvg run: the global tensors and their checkpoint."""

    method = "bp"

    def __init__(self, scenario: Scenario, objective: Objective, partitions: list[list[int]]) -> None:
        self.scenario = scenario
        self.partitions = partitions
        self.fed = scenario.federation
        self.objective = objective
        self.params = ParamSet.from_module(objective.classifier)
        opt = scenario.optimizer
        self.schedule = Schedule(opt.lr, opt.schedule, self.fed.rounds, opt.warmup)
        setup = ClientSetup(scenario, None)  # FedAvg clients never re-sync from a log
        self.setup_json, self.digest = setup.to_json(), setup.digest
        self.lr = 0.0
        self.arrays = ArrayRecord()
        self.path: Path | None = None

    def open(self, run: RunDir, resume: bool, last_metric_round: int, clients: Sequence[ClientRecord]) -> int:
        """Continue from the checkpoint (-1, start over, when there is none)."""
        from safetensors import safe_open

        self.path = run.state_dir / CHECKPOINT
        if not resume or not self.path.is_file():
            return -1
        with safe_open(str(self.path), framework="pt") as f:
            done = int((f.metadata() or {})["round"])
            self.params.load({k: f.get_tensor(k) for k in f.keys()})  # noqa: SIM118
        return min(done, last_metric_round)

    def begin_round(self, round_: int) -> None:
        """This round's lr and the global tensors every message carries."""
        self.lr = self.schedule(round_ - 1)
        self.arrays = params_to_arrays(self.params)

    def downlink(self, round_: int, client: int) -> Outgoing:
        """The global tensors and the round's config."""
        return Outgoing(RecordDict({ARRAYS_KEY: self.arrays, CONFIG_KEY: build_train_config(round_, self.lr, self.digest)}))

    def parse(self, round_: int, client: int, content: RecordDict) -> FedAvgUpdate:
        """Tensor names, shapes, finiteness and the example count."""
        return check_reply(self.params, content)

    def screen(self, round_: int, updates: Mapping[int, FedAvgUpdate]) -> dict[int, MessageError]:
        """Nothing beyond each reply's own checks."""
        return {}

    def work(self, round_: int, client: int, update: FedAvgUpdate | None, down_bytes: int, up_bytes: int,
             catch_up_entries: int) -> ClientWork:
        """``fo_local_epochs`` epochs of backprop steps over the client's own batches."""
        sc, train = self.scenario, self.objective.train
        shapes = tuple(batch_shape(self.objective.classifier, [train[i] for i in idx])
                       for epoch in range(self.fed.fo_local_epochs)
                       for idx in epoch_batches(self.partitions[client], sc.data.batch_size, sc.seed, round_, client,
                                                epoch))
        return ClientWork(down_bytes, up_bytes, batches=shapes,
                          host_seconds=update.compute_seconds if update is not None else None)

    def commit(self, round_: int, accepted: dict[int, FedAvgUpdate], synced: Sequence[int]) -> None:
        """Flower's weighted average of the kept replies (a skipped round keeps the model)."""
        if accepted:
            contents = [accepted[c].content for c in sorted(accepted)]
            load_arrays(self.params, aggregate_arrayrecords(contents, WEIGHT_KEY))
        kill_point("fedavg-aggregated", round_)

    def checkpoint(self, round_: int) -> None:
        """Save the global tensors of ``round_``."""
        from safetensors.torch import save_file

        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        save_file({n: t.detach().cpu().contiguous() for n, t in zip(self.params.names, self.params.tensors, strict=True)},
                  str(tmp), metadata={"round": str(round_), "digest": self.digest})
        kill_point("fedavg-checkpoint-written", round_)
        tmp.replace(self.path)

    def evaluate(self) -> dict[str, Any]:
        """Accuracy of the global model on the evaluation split."""
        return self.objective.classifier.evaluate(self.objective.eval, self.scenario.data.eval_batch_size)

    def round_fields(self) -> dict[str, Any]:
        """Nothing beyond the common fields."""
        return {}

    def summary_fields(self) -> dict[str, Any]:
        """Local epochs and the global model's digest."""
        return {"fo_local_epochs": self.fed.fo_local_epochs, "model_sha256": param_digest(self.params)}
