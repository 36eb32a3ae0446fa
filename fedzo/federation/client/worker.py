"""The client side: a worker that answers ``train`` messages with K x q scalars.

A worker (a Ray actor in simulation, a client-app process in deployment, this process
in the in-process engine) keeps ONE clean model synced to some round of the global
model and ONE working copy (the classifier's own parameters), cached at module level
so that consecutive virtual clients on the same worker reuse the loaded model.

Per message: the clean copy is brought to ``global(r - 1)`` exactly (the message's
catch-up, or, when this worker's cache sits at another round than the client's last
sync, a re-sync from the run's update log), copied into the working copy, and the K
local ZO steps run from there with the server's seeds on this client's partition.
Nothing client-specific survives the message: the working copy is overwritten from
the clean copy every time, batches come from explicit seeds, no global RNG is used.

Where the run's update log is not reachable (the deployment engine: a fresh client-app
process per message, the server on another machine), the clean copy lives on in the
node's on-disk cache (:mod:`fedzo.federation.client.nodecache`) between messages instead.

FedAvg backprop messages (:mod:`fedzo.federation.client.fedavg`) arrive through the
same ClientApp and the same handshake; :func:`handle` tells them apart by their records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedzo.errors import ConfigError, FedzoError
from fedzo.federation.batches import local_examples
from fedzo.federation.client import fedavg
from fedzo.federation.client.memory import peak_memory_bytes
from fedzo.federation.client.nodecache import NodeCache, default_base
from fedzo.federation.client.threads import client_threads, reserved_cpus
from fedzo.federation.logserver import log_lines
from fedzo.federation.parts import build_parts
from fedzo.federation.setup import ClientSetup, config_digest
from fedzo.federation.wire import fedavg as fedavg_wire
from fedzo.federation.wire.messages import (
    Downlink,
    Uplink,
    build_setup_reply,
    build_uplink,
    parse_downlink,
    seeds_digest,
)
from fedzo.killpoints import kill_point
from fedzo.models.adapters import enable_checkpointing
from fedzo.tasks.batching import Batch
from fedzo.tasks.types import Example
from fedzo.zo import (
    DirectionalLoss,
    EstimatorConfig,
    ParamSet,
    Perturber,
    UpdateLog,
    make_zo_optimizer,
    module_along,
    zo_step,
)
from fedzo.zo.forward_grad import Along
from fedzo.zo.server_optimizers import rebuild, split_state

SETUP_STATE_KEY = "fz.setup"


class CatchUpError(FedzoError):
    """The worker cannot reach the round the server asked for."""


class Worker:
    """One loaded model: the clean synced copy and the working copy."""

    def __init__(self, setup: ClientSetup) -> None:
        """Build the run's parts (:func:`~fedzo.federation.parts.build_parts`) from the scenario
        ``setup`` carries, and the clean and working copies of its model."""
        self.setup = setup
        self.digest = setup.digest
        sc = self.scenario = setup.scenario
        threads = client_threads(sc.runtime.threads, reserved_cpus())
        if threads:
            torch.set_num_threads(threads)
        parts = self.parts = build_parts(sc)
        self.objective, self.partitions = parts.objective, parts.partitions
        if sc.optimizer.checkpointing:  # FedAvg with backprop: recompute activations in backward
            enable_checkpointing(self.objective.classifier.model)
        self.work = ParamSet.from_module(self.objective.classifier)
        self.initial = self.work.snapshot()
        self.clean = ParamSet.from_tensors({n: t.clone() for n, t in self.initial.items()})
        self.round = 0
        self.work_perturber = parts.perturbers.build(self.work)  # its mask from the initial weights
        # the clean copy replays the global model, round by round on catch-up
        self.server_opt = parts.global_model(self.clean, like=self.work_perturber)
        self.clean_perturber = self.server_opt.perturber

    # -- catch-up ----------------------------------------------------------------------
    def _reset_clean(self) -> None:
        self.clean.load(self.initial)
        self.server_opt.reset()
        self.round = 0

    def _load_clean(self, tensors: dict[str, torch.Tensor], round_: int) -> None:
        """The clean copy (and the server optimizer's buffers) from named tensors."""
        params, state = split_state(tensors)
        self.clean.load(params)
        self.server_opt.load_state(state)
        self.round = round_

    def clean_tensors(self) -> dict[str, torch.Tensor]:
        """The clean copy and the server optimizer's buffers, by name (the node cache)."""
        return {**dict(zip(self.clean.names, self.clean.tensors, strict=True)), **self.server_opt.state_tensors()}

    def _resync_from_log(self, to_round: int) -> None:
        path = self.setup.resync_log
        if path is None:
            raise CatchUpError(f"node holds round {self.round}, the message catches up from another "
                               f"round, and no update log is available to re-sync to round {to_round}; "
                               "use catch_up: full or auto, or keep the node cache (cache-dir) between rounds")
        log, _ = UpdateLog.parse(log_lines(path), path)
        if (log.last_round or 0) < to_round:
            raise CatchUpError(f"update log {path} ends at round {log.last_round}; need round {to_round}")
        rebuild(self.server_opt, self.parts.catch_up(), log, self.round, to_round, self._reset_clean)
        self.round = to_round

    def catch_up(self, d: Downlink, cache: NodeCache | None = None) -> str:
        """Bring the clean copy to ``global(d.catch_up.to_round)``; returns how it was done.

        With a node ``cache``: start from the node's cached synced model when it is at
        another round than the one in memory (a fresh process, or a process that serves many
        nodes, as Flower's simulation runtime does), from the initial model when the node has
        none yet, and save the result.
        """
        if cache is not None:
            cached = cache.load(self.digest)
            if cached is None and self.round != 0:  # a node with no cache yet holds the initial model, even
                self._reset_clean()                 # when this process last served another node (simulation)
            elif cached is not None and cached.round != self.round:
                self._load_clean(cached.tensors, cached.round)
        how = self._catch_up(d)
        if cache is not None and how != "cached":
            cache.save(self.round, self.digest, self.clean_tensors())
        return how

    def _catch_up(self, d: Downlink) -> str:
        cu = d.catch_up
        if cu.kind == "full":
            assert cu.weights is not None
            self._load_clean({k: torch.from_numpy(v.copy()) for k, v in cu.weights.items()}, cu.to_round)
            return "full"
        if self.round == cu.to_round:
            return "cached"
        if cu.kind == "seed_pool":  # the pool totals, applied to the initial weights
            self._reset_clean()
        elif cu.kind != "replay" or self.round != cu.from_round:
            self._resync_from_log(cu.to_round)
            return "log"
        for entries in cu.rounds():
            self.server_opt.apply_round(entries)
        self.round = cu.to_round
        return cu.kind

    # -- training ----------------------------------------------------------------------
    def _picked(self, client: int, round_: int, step: int) -> list[Example]:
        return local_examples(self.objective.train, self.partitions[client], self.scenario.data.batch_size,
                              self.scenario.seed, round_, client, step)

    def prefetch(self, downlinks: Sequence[Downlink]) -> None:
        """Tokenize every batch the train messages ``downlinks`` will use, in one call
        (host speed only: :meth:`batch` then finds each text encoded)."""
        self.objective.classifier.prefetch(
            [e for d in downlinks for k in range(len(d.seeds)) for e in self._picked(d.client, d.round, k)])

    def batch(self, client: int, round_: int, step: int) -> Batch:
        """The minibatch of local step ``step``: a pure function of (seed, round, client, step)."""
        picked = self._picked(client, round_, step)
        clf = self.objective.classifier
        return next(iter(clf.batches(picked, len(picked)))).to(self.objective.device)

    def train(self, d: Downlink, cache: NodeCache | None = None) -> Uplink:
        """Catch up, then K local ZO steps from ``global(r - 1)``; returns the scalars."""
        t0 = time.perf_counter()
        self.check_client(d)
        self.catch_up(d, cache)
        kill_point("client-caught-up", d.round)
        self.reset_work()
        clf = self.objective.classifier
        if self.objective.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.objective.device)

        def evaluate(b: Batch) -> float:
            with torch.no_grad():
                return float(clf.loss(b))

        def along(b: Batch) -> Along:
            return module_along(clf, self.work, lambda: clf.loss(b))

        self.prefetch([d])
        steps = self.local_steps(d, self.work_perturber, evaluate, along)
        kill_point("client-trained", d.round)
        return steps.uplink(d, time.perf_counter() - t0, peak_memory_bytes(self.objective.device))

    def reset_work(self) -> None:
        """Overwrite the working copy with the clean synced copy."""
        self.work.load(dict(zip(self.clean.names, self.clean.tensors, strict=True)))

    def check_client(self, d: Downlink) -> None:
        """A clear error for a client id outside the fleet."""
        n = self.scenario.federation.num_clients
        if not 0 <= d.client < n:
            raise ConfigError(f"client {d.client} is out of range; allowed: 0..{n - 1}")

    def estimator(self, d: Downlink) -> EstimatorConfig:
        """The run's estimator with the eps and q train message ``d`` carries."""
        est = self.parts.estimator
        return est if (est.eps, est.q) == (d.eps, d.q) else replace(est, eps=d.eps, q=d.q)

    def local_steps(self, d: Downlink, perturber: Perturber, evaluate: Callable[[Batch], float],
                    along: Callable[[Batch], Along] | None = None) -> LocalSteps:
        """The K local ZO steps of ``d`` on ``perturber``'s parameters (moved in place);
        ``evaluate(batch)`` is the loss of the parameters as they are when it is called, and
        ``along(batch)`` its derivative along a direction (forward-grad), where available.

        The batched engine runs this very function for many clients at once, each with its
        own perturber and an ``evaluate`` that joins one forward pass shared by all of them.
        """
        est = self.estimator(d)
        opt = make_zo_optimizer(self.scenario.optimizer.name)
        out = LocalSteps()
        along = along if est.tangent_forwards_per_step else None  # built per batch only when used
        for k, seed in enumerate(d.seeds):
            batch = self.batch(d.client, d.round, k)
            out.examples += len(batch.labels)

            def loss_fn(b: Batch = batch) -> float:
                return evaluate(b)

            res = zo_step(perturber, DirectionalLoss(loss_fn, along(batch) if along else None), seed, est, opt, d.lr)
            out.scalars.extend(res.grads)
            out.losses.append(res.loss)
        return out


@dataclass
class LocalSteps:
    """What a client's K local steps measured: its scalars, losses and example count."""

    scalars: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    examples: int = 0

    def uplink(self, d: Downlink, seconds: float, peak_memory: int) -> Uplink:
        """The reply to ``d``."""
        return Uplink(d.round, d.client, tuple(self.scalars), seeds_digest(d.seeds), self.examples,
                      sum(self.losses) / len(self.losses), self.losses[-1], seconds, peak_memory)


_WORKER: Worker | None = None
_WORKER_DIGEST: str | None = None


def get_worker(setup_json: str) -> Worker:
    """The module-level worker for this setup (rebuilt when the setup changes)."""
    global _WORKER, _WORKER_DIGEST
    digest = config_digest(setup_json)
    if _WORKER is None or _WORKER_DIGEST != digest:
        _WORKER = None
        _WORKER = Worker(ClientSetup.from_json(setup_json))
        _WORKER_DIGEST = digest
    return _WORKER


def reset_worker() -> None:
    """Forget the cached worker (tests)."""
    global _WORKER, _WORKER_DIGEST
    _WORKER, _WORKER_DIGEST = None, None


def _partition_id(context: Context) -> int:
    pid = context.node_config.get("partition-id")
    if isinstance(pid, bool) or not isinstance(pid, int | str):
        raise ConfigError(f"node_config 'partition-id' is {pid!r}; start the SuperNode with "
                          "--node-config 'partition-id=I num-partitions=N'")
    try:
        return int(pid)
    except ValueError:
        raise ConfigError(f"node_config 'partition-id' is {pid!r}; expected an integer") from None


def node_cache(context: Context) -> NodeCache:
    """This node's on-disk synced-model cache for the current run."""
    return NodeCache(default_base(dict(context.node_config)), _partition_id(context), context.run_id)


def _setup_json(context: Context, digest: str) -> str:
    if SETUP_STATE_KEY not in context.state:  # a restarted node: the configuration it kept on disk, if any
        kept = node_cache(context).load_setup() if "partition-id" in context.node_config else None
        if kept is None or config_digest(kept) != digest:  # none, or another run's configuration
            raise CatchUpError("train message before setup: this node never received the run configuration")
        context.state[SETUP_STATE_KEY] = ConfigRecord({"cfg": kept})
    setup_json = str(context.state.config_records[SETUP_STATE_KEY]["cfg"])
    if config_digest(setup_json) != digest:
        raise CatchUpError(f"train message for configuration {digest}; this node was set up "
                           f"with {config_digest(setup_json)}")
    return setup_json


def train_worker(d: Downlink, context: Context) -> Worker:
    """The worker that serves train message ``d`` on the node of ``context``."""
    return get_worker(_setup_json(context, d.config_digest))


def handle(content: RecordDict, context: Context) -> RecordDict:
    """Answer one downlink: ``setup`` stores the run config, ``train`` returns scalars
    (seeds-and-scalars) or trained weights (FedAvg baseline)."""
    if fedavg_wire.is_fedavg_downlink(content):
        cfg = content.config_records[fedavg_wire.CONFIG_KEY]
        worker = get_worker(_setup_json(context, str(cfg[fedavg_wire.DIGEST_KEY])))
        return fedavg.train_local(worker, _partition_id(context), content)
    d = parse_downlink(content)
    if d.op == "setup":
        context.state[SETUP_STATE_KEY] = ConfigRecord({"cfg": d.config_json})
        worker = get_worker(d.config_json)
        pid = _partition_id(context)
        if worker.setup.resync_log is None and worker.scenario.is_zo:  # a node that keeps a cache
            node = node_cache(context)
            node.start_run()
            node.save_setup(d.config_json)
        kill_point("client-setup-stored")
        return build_setup_reply(pid)
    worker = train_worker(d, context)
    cache = node_cache(context) if worker.setup.resync_log is None else None
    return build_uplink(worker.train(d, cache))


app = ClientApp()


@app.train()
def _train(msg: Message, context: Context) -> Message:
    return Message(handle(msg.content, context), reply_to=msg)
