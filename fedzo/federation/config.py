"""Federated settings: one frozen, validated object (embedded as ``federation:`` in a scenario).

Field descriptions double as documentation. Combinations that the seeds-and-scalars
protocol cannot replay exactly are refused here, with the option, the value and what
is allowed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedzo.federation.faultspec import FaultsConfig

ZO_FEDERATED_OPTIMIZERS = ("zo-sgd", "zo-sgd-sign")
FO_FEDERATED_OPTIMIZERS = ("fo-sgd", "fo-adam")
CATCH_UP_POLICIES = ("replay", "seed_pool", "full", "auto")
AGGREGATORS = ("mean", "median", "trimmed-mean")


class FederationConfig(BaseModel):
    """Every setting of the federated protocol (server, clients, engine)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_clients: int = Field(10, ge=1, description="clients (data partitions) in the fleet")
    clients_per_round: int | None = Field(
        None, ge=1, description="participants sampled per round (default: all; exclusive with participation)")
    participation: float | None = Field(
        None, gt=0, le=1, description="fraction of clients sampled per round (exclusive with clients_per_round)")
    rounds: int = Field(10, ge=1, description="communication rounds")
    local_steps: int = Field(10, ge=1, description="K: local ZO steps per round (K step seeds sent down)")
    q: int = Field(1, ge=1, description="ZO directions per step (scalars per step sent up)")
    lr: float = Field(1e-6, gt=0, description="learning rate of the aggregated update")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning-rate schedule over rounds x local steps")
    warmup_rounds: int = Field(0, ge=0, description="linear warm-up, in rounds")
    eps: float = Field(1e-3, gt=0, description="ZO perturbation scale")
    estimator: Literal["central", "one-sided"] = Field("central", description="finite-difference scheme")
    generator: Literal["portable", "torch"] = Field(
        "portable", description="direction generator (portable: same directions on CPU and CUDA)")
    distribution: Literal["gaussian", "rademacher"] = Field("gaussian", description="direction distribution")
    chunk_size: int = Field(1 << 20, ge=1024, description="elements regenerated per chunk")
    optimizer: str = Field(
        "zo-sgd", description="zo-sgd | zo-sgd-sign (seeds and scalars); fo-sgd | fo-adam (FedAvg baseline)")
    catch_up: Literal["replay", "seed_pool", "full", "auto"] = Field(
        "replay", description="how a returning client is brought to the global model: replay the log "
        "entries it missed (DeComFL), seed_pool (FedKSeed: accumulated scalars of a fixed seed pool), "
        "full (weights), or auto (cheapest of replay and full in bytes and modelled device time)")
    seed_pool_size: int = Field(4096, ge=1, description="P: seeds in the pool (catch_up: seed_pool)")
    history_rounds: int | None = Field(
        None, ge=1, description="server keeps at most this many rounds of entries for catch-up; "
        "clients further behind get the weights (default: unbounded, compacted to the oldest need)")
    aggregator: Literal["mean", "median", "trimmed-mean"] = Field(
        "mean", description="per-seed aggregation of the clients' scalars (mean is example-weighted)")
    trim_fraction: float = Field(0.1, ge=0, lt=0.5, description="fraction cut at each end (trimmed-mean)")
    clip: float | None = Field(None, gt=0, description="clip each scalar to [-clip, clip] before aggregation")
    aggregator_clip: Literal["none", "running-median"] = Field(
        "none", description="running-median: clip each client scalar to clip_multiplier x the median "
        "|aggregated scalar| of the last clip_window applied rounds (first round: of the round's scalars)")
    clip_multiplier: float = Field(3.0, gt=0, description="k of the running-median clip bound")
    clip_window: int = Field(10, ge=1, description="rounds in the running median (aggregator_clip)")
    max_abs_scalar: float = Field(1e6, gt=0, description="replies with a larger |scalar| are rejected")
    min_clients: int = Field(1, ge=1, description="fewest valid replies for a round to be applied")
    below_min: Literal["skip", "retry"] = Field(
        "skip", description="when fewer than min_clients replied: skip the round (no update) or retry it once")
    eval_every: int = Field(1, ge=1, description="evaluate the global model every E rounds (and at the end)")
    round_timeout: float = Field(600.0, gt=0, description="seconds the server waits for replies per round")
    setup_timeout: float = Field(
        900.0, gt=0, description="seconds the server waits for every node to register and load the model "
        "before round 1 (a cold node imports torch and reads the weights first)")
    engine: Literal["inprocess", "simulation", "deployment"] = Field(
        "inprocess", description="inprocess (direct calls, tests), simulation (Flower + Ray), deployment")
    batch_size: int = Field(16, ge=1, description="examples per local step")
    partition: Literal["iid", "dirichlet", "pathological", "shard"] = Field(
        "iid", description="how the training set is split over clients")
    partition_alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (partition: dirichlet)")
    fo_local_epochs: int = Field(1, ge=1, description="local epochs of the FedAvg backprop baseline")
    seed: int = Field(0, ge=0, description="run seed: sampling, step seeds, batches")

    @model_validator(mode="after")
    def _combinations(self) -> FederationConfig:
        allowed = ZO_FEDERATED_OPTIMIZERS + FO_FEDERATED_OPTIMIZERS
        if self.optimizer not in allowed:
            hint = ""
            if self.optimizer in ("zo-adam", "zo-sgd-mmt", "zo-sgd-cons"):
                hint = (f" ({self.optimizer} keeps dense state or extra probes that a client cannot "
                        "express as coefficient x direction(seed); use it in centralized training)")
            raise ValueError(f"optimizer: {self.optimizer!r} is not allowed in federation{hint}; "
                             f"allowed: {', '.join(allowed)}")
        if self.clients_per_round is not None and self.participation is not None:
            raise ValueError("clients_per_round and participation both set; choose one")
        if self.participants > self.num_clients:
            raise ValueError(f"clients_per_round: {self.clients_per_round} exceeds num_clients "
                             f"{self.num_clients}")
        if self.min_clients > self.participants:
            raise ValueError(f"min_clients: {self.min_clients} exceeds the {self.participants} "
                             "participants per round; lower min_clients or raise participation")
        if self.catch_up == "seed_pool":
            if self.schedule != "constant" or self.warmup_rounds:
                raise ValueError("catch_up: seed_pool accumulates scalars per pool seed and needs a "
                                 "constant lr; set schedule: constant and warmup_rounds: 0, or use replay")
            if self.q != 1:
                raise ValueError(f"catch_up: seed_pool needs q: 1 (got {self.q}); pool seeds are directions")
            if self.seed_pool_size < self.local_steps:
                raise ValueError(f"seed_pool_size: {self.seed_pool_size} is below local_steps "
                                 f"{self.local_steps}; a round draws K distinct pool seeds")
        return self

    @property
    def participants(self) -> int:
        """Clients sampled per round."""
        if self.clients_per_round is not None:
            return self.clients_per_round
        if self.participation is not None:
            return max(1, round(self.participation * self.num_clients))
        return self.num_clients

    @property
    def is_zo(self) -> bool:
        """Seeds-and-scalars protocol (True) or FedAvg backprop baseline (False)."""
        return self.optimizer in ZO_FEDERATED_OPTIMIZERS


class FederatedRunConfig(BaseModel):
    """A complete federated run: what model and data, and the federation settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("federated", description="run name (shown in plots and reports)")
    model: str = Field("tiny-llama", description="embedded model name, local directory or hub id")
    task: str = Field("synthetic-sentiment", description="embedded task name or dataset")
    prompt: str | None = Field(None, description="prompt template name (default: the task's best)")
    peft: Literal["full", "lora", "prefix", "prompt"] = Field("full", description="which parameters are trained")
    lora_rank: int = Field(8, ge=1, description="LoRA rank (peft: lora)")
    virtual_tokens: int = Field(10, ge=1, description="virtual tokens (peft: prefix/prompt)")
    max_length: int | None = Field(None, ge=8, description="token limit per example")
    train_examples: int | None = Field(None, ge=1, description="use the first N training examples only")
    eval_examples: int | None = Field(None, ge=1, description="evaluate on the first N examples only")
    eval_split: Literal["dev", "test"] = Field("dev", description="split evaluated by the server")
    eval_batch_size: int = Field(32, ge=1, description="batch size for evaluation")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process")
    device: Literal["cpu", "cuda", "auto"] = Field("cpu", description="where clients and server compute")
    federation: FederationConfig = Field(default_factory=FederationConfig, description="federated settings")
    faults: FaultsConfig = Field(default_factory=FaultsConfig,
                                 description="injected client faults (seeds-and-scalars protocol only)")

    @model_validator(mode="after")
    def _faults_need_zo(self) -> FederatedRunConfig:
        if self.faults.active and not self.federation.is_zo:
            raise ValueError(f"faults: fault injection covers the seeds-and-scalars protocol; optimizer "
                             f"{self.federation.optimizer!r} runs the FedAvg baseline; use zo-sgd or "
                             "zo-sgd-sign, or remove faults")
        return self

    def objective_config(self) -> Any:
        """The centralized TrainConfig that builds the same model and data (reuses fedzo.train)."""
        from fedzo.train import TrainConfig

        f = self.federation
        return TrainConfig(
            name=self.name, model=self.model, task=self.task, prompt=self.prompt, peft=self.peft,
            lora_rank=self.lora_rank, virtual_tokens=self.virtual_tokens, max_length=self.max_length,
            train_examples=self.train_examples, eval_examples=self.eval_examples,
            eval_split=self.eval_split, eval_batch_size=self.eval_batch_size, threads=self.threads,
            device=self.device, seed=f.seed, generator=f.generator, distribution=f.distribution,
            chunk_size=f.chunk_size, eps=f.eps, q=f.q, estimator=f.estimator, lr=f.lr,
            batch_size=f.batch_size,
            optimizer=f.optimizer if f.optimizer in ZO_FEDERATED_OPTIMIZERS + FO_FEDERATED_OPTIMIZERS else "zo-sgd",
        )
