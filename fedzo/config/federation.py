"""The ``federation:`` section: the federated protocol, its server and its engine.

The optimizer (``optimizer.name``) picks the protocol: a zo-* optimizer runs the
seeds-and-scalars protocol, a fo-* one the FedAvg backprop baseline. Combinations that
involve other sections (a catch-up policy that needs a constant learning rate, say) are
checked by :class:`fedzo.config.scenario.Scenario`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fedzo.config.names import (
    AGGREGATORS,
    CATCH_UP_POLICIES,
    SERVER_OPTIMIZERS,
    STATEFUL_SERVER_OPTIMIZERS,
    check_name,
)
from fedzo.config.sections import Section
from fedzo.tasks.partition import PARTITIONERS


class SimulationConfig(Section):
    """Flower's simulation engine (Ray, ``engine: simulation``): resources per virtual client."""

    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves for each client that runs at once")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per running client; fractions share one GPU (0.25: "
                            "four clients per GPU); above 0 the clients compute on CUDA (runtime.device)")
    max_concurrent: int = Field(2, ge=1, description="clients that run at once on a local Ray (each holds one "
                                "model copy); Ray gets max_concurrent x num_cpus CPUs. Ignored with an address")
    address: str | None = Field(None, description="attach to a running Ray cluster ('auto', or the head's "
                                "host:port; default: $RAY_ADDRESS when set, else start a local Ray): its "
                                "resources are used as they are, none are forced")

    @model_validator(mode="after")
    def _whole_cpus(self) -> SimulationConfig:
        cpus = self.max_concurrent * self.num_cpus
        if self.address is None and abs(cpus - round(cpus)) > 1e-9:
            raise ValueError(f"federation.simulation: max_concurrent x num_cpus = {self.max_concurrent} x "
                             f"{self.num_cpus:g} = {cpus:g} is not a whole number of CPUs, which a local Ray needs; "
                             "choose values whose product is whole")
        return self


class BatchedConfig(Section):
    """The batched engine (``engine: batched``): the round's ZO clients share forward passes."""

    max_rows: int = Field(256, ge=1, description="examples per joint forward pass (all clients' rows together): "
                          "the cap on its activation memory; more rows take several passes")
    max_padding: float = Field(0.25, ge=0, description="extra padded tokens a joint pass may add, as a fraction of "
                               "its clients' own tokens (rows are padded to the pass's widest; passes of whole clients, under "
                               "full weights and LoRA with diverging clients: beyond what the clients' own batches pad "
                               "to): low on a CPU, where padding costs as much as real tokens; high (e.g. 4) on a GPU, "
                               "where passes cost more")
    max_pass_mib: float | None = Field(None, gt=0, description="activation MiB of one joint pass (rows x width x "
                                       "the model's widest layer): passes that stay in a CPU's caches run faster "
                                       "(SmolLM2-135M on 2 cores: 16 rows 1.3x, 128 rows 0.6x the speed of "
                                       "8-row batches); default (null) 8 on a CPU; on CUDA a quarter of the "
                                       "device's free memory beside the clients' states (max_state_mib); no cap "
                                       "on other devices")
    max_state_mib: float | None = Field(
        None, gt=0, description="MiB that the clients' own trainable states may take at once (rows mode: each "
        "client's copy of its prompt, prefix, LoRA adapters or, for full weights, the whole model; twice that "
        "under forward-grad): a round whose participants do not fit runs them in groups that each fit, one "
        "after another (the same results), and says so in its batching note; a client that alone does not "
        "fit runs the round one client at a time. Default (null): on CUDA 3/4 of the device's free memory "
        "(torch.cuda.mem_get_info) less a headroom of max(512 MiB, 5% of the device), leaving the rest to a "
        "pass's activations; on a CPU half the available RAM (psutil, else /proc/meminfo MemAvailable)")
    share_prompt: bool = Field(True, description="prompt tuning of a causal LM: run each client's virtual tokens "
                               "once per pass and share their keys and values across its rows, instead of once per "
                               "row (host time only; scores equal to float32 rounding)")
    half_precision: Literal["sequential", "joint"] = Field(
        "sequential", description="model.dtype bf16 or fp16: sequential runs the clients one at a time, so each "
        "client's scalars are those of its own batch; joint shares their forward passes as in fp32, where a pass of "
        "another shape rounds each loss differently (in bf16 the scalars then differ from a client's own by as much "
        "as their size: another draw of the same rounding noise, not the scalars a board would send), for speed")


class ServerOptimizerConfig(Section):
    """How the server moves the global model by a round's aggregated entries (seeds-and-scalars)."""

    name: str = Field("none", description="none (apply the entries: ZO-SGD) | momentum (FedAvgM) | adam (FedAdam) "
                      "over the round's move; momentum and adam keep dense buffers the size of the trainable set on "
                      "the server and on every client, so they need peft prompt, prefix or lora, and catch_up "
                      "replay, full or auto")
    lr: float | None = Field(None, gt=0, description="server learning rate (default: 1.0 for momentum, "
                             "1e-3 for adam; adam's step per round and coordinate is about lr)")
    momentum: float = Field(0.9, ge=0, lt=1, description="momentum: decay of the buffer")
    beta1: float = Field(0.9, ge=0, lt=1, description="adam: decay of the first moment")
    beta2: float = Field(0.99, ge=0, lt=1, description="adam: decay of the second moment")
    tau: float = Field(1e-6, gt=0, description="adam: added to the root of the second moment (adaptivity)")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return check_name("server optimizer", SERVER_OPTIMIZERS, v)

    def hyperparameters(self) -> dict[str, Any]:
        """Keyword arguments of :func:`fedzo.zo.server_optimizers.make_server_optimizer`."""
        if self.name == "momentum":
            return {"lr": 1.0 if self.lr is None else self.lr, "momentum": self.momentum}
        if self.name == "adam":
            return {"lr": 1e-3 if self.lr is None else self.lr, "beta1": self.beta1, "beta2": self.beta2,
                    "tau": self.tau}
        return {}

    @property
    def stateful(self) -> bool:
        """Whether the server keeps buffers that clients must rebuild."""
        return self.name in STATEFUL_SERVER_OPTIMIZERS


class FederationConfig(Section):
    """Every setting of the federated protocol (server, clients, engine)."""

    num_clients: int = Field(10, ge=1, description="clients (data partitions) in the fleet")
    clients_per_round: int | None = Field(
        None, ge=1, description="participants sampled per round (default: all; exclusive with participation)")
    participation: float | None = Field(
        None, gt=0, le=1, description="fraction of clients sampled per round (exclusive with clients_per_round)")
    rounds: int = Field(10, ge=1, description="communication rounds")
    local_steps: int = Field(10, ge=1, description="K: local ZO steps per round (K step seeds sent down)")
    catch_up: str = Field(
        "replay", description="how a returning client is brought to the global model: "
        + " | ".join(CATCH_UP_POLICIES) + " (replay: the log entries it missed, as DeComFL; "
        "seed_pool: accumulated scalars of a fixed seed pool, as FedKSeed; full: the weights; "
        "auto: the cheaper of replay and full on the client's device)")
    seed_pool_size: int = Field(4096, ge=1, description="P: seeds in the pool (catch_up: seed_pool)")
    history_rounds: int | None = Field(
        None, ge=1, description="server keeps at most this many rounds of entries for catch-up; "
        "clients further behind get the weights (default: unbounded, compacted to the oldest need)")
    aggregator: str = Field(
        "mean", description="per-seed aggregation of the clients' scalars: "
        + " | ".join(AGGREGATORS) + " (mean is example-weighted)")
    trim_fraction: float = Field(0.1, ge=0, lt=0.5, description="fraction cut at each end (trimmed-mean)")
    clip: float | None = Field(None, gt=0, description="clip each scalar to [-clip, clip] before aggregation")
    aggregator_clip: Literal["none", "running-median", "norm"] = Field(
        "none", description="running-median: clip each client scalar to clip_multiplier x the median "
        "|aggregated scalar| of the last clip_window applied rounds (first round: of the round's scalars); "
        "norm: scale each client's scalars down to clip_multiplier x the round's median client norm")
    clip_multiplier: float = Field(3.0, gt=0, description="k of the running-median and norm clip bounds")
    clip_window: int = Field(10, ge=1, description="rounds in the running median (aggregator_clip)")
    reputation: bool | None = Field(
        None, description="leave out clients whose scalars, over seeds and earlier rounds, point against the "
        "other clients' (direction z-score below reputation_threshold) or are far larger (reputation_max_scale); "
        "null: on for the seeds-and-scalars protocol (3 or more replies a round), off for FedAvg, which it "
        "cannot score")
    reputation_threshold: float = Field(-1.0, description="direction z-score below which a client is left out "
                                        "(0: chance agreement; an honest client scores above 0 on average)")
    reputation_max_scale: float = Field(3.0, gt=1, description="a client whose scalars' norm is on average "
                                        "(geometric mean) more than this many times the others' is left out")
    reputation_reference: Literal["clients", "server"] = Field(
        "clients", description="what a client's scalars are compared with, seed by seed (reputation): clients: the "
        "median of the other clients' (weaker as attackers grow in number); server: the server's own scalars for "
        "the round's seeds on reference_examples training examples it holds (a root set, as FLTrust)")
    reference_examples: int = Field(128, ge=1, description="the server's root set (reputation_reference: server)")
    max_abs_scalar: float = Field(1e6, gt=0, description="replies with a larger |scalar| are rejected")
    max_scalar_ratio: float | None = Field(
        1000.0, gt=1, description="replies whose largest |scalar| is more than this many times the run's own scale "
        "(the median |aggregated scalar| of recent rounds; in the first, of the round's replies) are rejected "
        "(null: off)")
    min_clients: int = Field(1, ge=1, description="fewest valid replies for a round to be applied")
    below_min: Literal["skip", "retry"] = Field(
        "skip", description="when fewer than min_clients replied: skip the round (no update) or retry it once")
    allow_no_training: bool = Field(
        False, description="a run in which no round trained (every sampled client offline, late or rejected) "
        "ends normally; by default it ends with a warning and exit status 3")
    eval_every: int = Field(1, ge=1, description="evaluate the global model every E rounds (and at the end)")
    round_timeout: float = Field(600.0, gt=0, description="seconds the server waits for replies per round")
    setup_timeout: float = Field(
        900.0, gt=0, description="seconds the server waits for every node to register and load the model "
        "before round 1 (a cold node imports torch and reads the weights first)")
    engine: Literal["inprocess", "batched", "simulation", "deployment"] = Field(
        "inprocess", description="inprocess (direct calls), batched (in-process, the round's ZO clients share "
        "forward passes), simulation (Flower + Ray), deployment (SuperLink + SuperNodes)")
    batched: BatchedConfig = Field(default_factory=BatchedConfig,
                                   description="the joint forward passes of the batched engine (engine: batched)")
    simulation: SimulationConfig = Field(default_factory=SimulationConfig,
                                         description="resources of the simulation engine (engine: simulation)")
    partition: str = Field(
        "iid", description="how the training set is split over clients: " + " | ".join(PARTITIONERS.names()))
    partition_alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (partition: dirichlet)")
    fo_local_epochs: int = Field(1, ge=1, description="local epochs of the FedAvg backprop baseline")
    server_optimizer: ServerOptimizerConfig = Field(
        default_factory=ServerOptimizerConfig, description="how the server applies a round's aggregated "
        "scalars (seeds-and-scalars protocol): plainly, or with momentum or Adam over the round's move")

    def scores_clients(self, seeds_and_scalars: bool) -> bool:
        """Whether the reputation runs: ``reputation``, or when it is null, for the
        seeds-and-scalars protocol (``seeds_and_scalars``) only."""
        return seeds_and_scalars if self.reputation is None else self.reputation

    @field_validator("catch_up")
    @classmethod
    def _known_policy(cls, v: str) -> str:
        return check_name("catch-up policy", CATCH_UP_POLICIES, v)

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, v: str) -> str:
        return check_name("aggregator", AGGREGATORS, v)

    @field_validator("partition")
    @classmethod
    def _known_partition(cls, v: str) -> str:
        return PARTITIONERS.check(v)

    @model_validator(mode="after")
    def _counts(self) -> FederationConfig:
        problems = []
        if self.clients_per_round is not None and self.participation is not None:
            problems.append("federation.clients_per_round and federation.participation are both set; choose one")
        elif self.participants > self.num_clients:
            problems.append(f"federation.clients_per_round: {self.clients_per_round} exceeds num_clients "
                            f"{self.num_clients}")
        elif self.min_clients > self.participants:
            problems.append(f"federation.min_clients: {self.min_clients} exceeds the {self.participants} "
                            "participants per round; lower min_clients or raise participation")
        if self.reputation_reference == "server" and self.reputation is False:
            problems.append("federation.reputation_reference: 'server' compares clients with the server's own "
                            "scalars for the reputation; it needs federation.reputation: true or null")
        if self.catch_up == "seed_pool" and self.seed_pool_size < self.local_steps:
            problems.append(f"federation.seed_pool_size: {self.seed_pool_size} is below local_steps "
                            f"{self.local_steps}; a round draws K distinct pool seeds")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def participants(self) -> int:
        """Clients sampled per round."""
        if self.clients_per_round is not None:
            return self.clients_per_round
        if self.participation is not None:
            return max(1, round(self.participation * self.num_clients))
        return self.num_clients
