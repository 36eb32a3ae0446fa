"""The configuration sections that centralized and federated runs share.

Each section is a small frozen pydantic model; a centralized run
(:class:`fedzo.config.train.TrainConfig`) and a federated scenario
(:class:`fedzo.config.scenario.Scenario`) both hold the same ``model``, ``data``, ``zo``,
``optimizer`` and ``runtime`` sections, so a setting means the same thing, with the same
default, wherever it appears. Field descriptions are the documentation
(``docs/scenarios.md`` and ``fedzo train --help`` are generated from them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fedzo.tasks.forward import ForwardMode
from fedzo.tasks.user import TaskOptions
from fedzo.zo.estimators import ESTIMATORS
from fedzo.zo.optimizers import OPTIMIZERS, is_zo

PeftKind = Literal["full", "lora", "prefix", "prompt"]
Precision = Literal["fp32", "bf16", "fp16"]


class Section(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    """Which model is trained, and which of its parameters."""

    name: str = Field("smollm2-135m", description="embedded model name (smollm2-135m, minilm-l6, "
                      "tiny-llama, tiny-bert), a local directory or a hub id")
    peft: PeftKind = Field("full", description="which parameters are trained: all (full), LoRA "
                           "adapters, prefix or prompt (virtual tokens)")
    lora_rank: int = Field(8, ge=1, description="LoRA rank (peft: lora)")
    virtual_tokens: int = Field(10, ge=1, description="virtual tokens (peft: prefix / prompt)")
    dtype: Precision = Field("fp32", description="precision of the weights, the perturbations, the updates "
                             "and the replay (fp32, bf16; fp16 on CUDA only)")


class DataConfig(Section):
    """The task, its prompt, how much of it is used and how it is batched."""

    task: str = Field("rotten-tomatoes", description="embedded task name; your own data: a CSV, TSV, JSON, "
                      "JSON Lines or Parquet file, a folder of them (train.csv, dev.csv, test.csv, ...) or of "
                      "datasets.save_to_disk; or hf:<dataset>[:<config>] with hub access")
    prompt: str | None = Field(None, description="prompt template name (causal LMs); default: the "
                               "task's best measured")
    max_length: int | None = Field(None, ge=8, description="token limit per example (default: the task's)")
    train_examples: int | None = Field(None, ge=1, description="use the first N training examples only")
    eval_examples: int | None = Field(None, ge=1, description="evaluate on the first N examples only")
    eval_split: Literal["dev", "test"] = Field("dev", description="split evaluated during training")
    batch_size: int = Field(16, ge=1, description="examples per training step (per local step in a "
                            "federated run)")
    eval_batch_size: int = Field(32, ge=1, description="batch size for evaluation")
    text_column: str | None = Field(None, description="your data: the column holding the text (default: detected)")
    label_column: str | None = Field(None, description="your data: the column holding the label (default: detected)")
    label_names: list[str | int | float] | None = Field(
        None, description="your data: the classes, in class order: the label values themselves (matched by value, "
        "e.g. [1, 3, 5]) or names of integer labels 0..K-1 (default: the values found, sorted)")
    label_map: dict[str | int | float, str] | None = Field(
        None, description="your data: label value -> class name, e.g. {1: bad, 3: ok, 5: good} (several values "
        "may share a class; classes in the order they first appear); instead of label_names")
    verbalizer: list[str] | None = Field(None, description="your data: the answer word of each label, in label "
                                         "order, each one token of the model; a leading space is added (default: the label names)")
    template: str | None = Field(None, description="your data: a prompt template with {text} (default: "
                                 "'{text}\\nLabel:')")
    encoding: str = Field("utf-8", description="your data: the text encoding of CSV, TSV and JSON files (e.g. "
                          "latin-1, cp1252, utf-16)")
    dev_size: int | None = Field(None, ge=0, description="your data: examples carved out for dev when it has no "
                                 "dev split (default: min(500, n/10))")
    test_size: int | None = Field(None, ge=0, description="your data: examples carved out for test when it has no "
                                  "test split (default: min(1000, n/5))")

    @field_validator("task")
    @classmethod
    def _absolute_data_path(cls, task: str) -> str:
        """Your own data's path, made absolute where it exists from here: the run directory's
        scenario.yaml then finds it from any directory (``fedzo evaluate --run``, ``--resume``)."""
        path = Path(task).expanduser()
        if task.startswith("hf:") or path.is_absolute() or not (path.suffix or path.is_dir()) or not path.exists():
            return task
        return str(path.resolve())

    @model_validator(mode="after")
    def _one_label_mapping(self) -> DataConfig:
        if self.label_names is not None and self.label_map is not None:
            raise ValueError("give data.label_map or data.label_names, not both (label_map names each value's class)")
        return self

    def task_options(self) -> TaskOptions:
        """The options that read a user's dataset."""
        return TaskOptions(
            text_column=self.text_column, label_column=self.label_column,
            label_names=tuple(str(n) for n in self.label_names) if self.label_names else None,
            label_map=dict(self.label_map) if self.label_map else None,
            verbalizer=tuple(self.verbalizer) if self.verbalizer else None, template=self.template,
            dev_size=self.dev_size, test_size=self.test_size, encoding=self.encoding)


class ZOConfig(Section):
    """How a zeroth-order step probes the loss: directions, their generator and scale."""

    estimator: str = Field("central", description="how a step gets each direction's scalar (finite differences, "
                           "or forward-grad: the exact directional derivative by forward-mode AD): "
                           + " | ".join(ESTIMATORS.names()))
    eps: float = Field(1e-3, gt=0, description="perturbation scale")
    q: int = Field(1, ge=1, description="directions per step (scalars per step sent up)")
    generator: Literal["portable", "torch"] = Field(
        "portable", description="direction generator (portable: the same directions on CPU and CUDA)")
    distribution: Literal["gaussian", "rademacher"] = Field("gaussian", description="direction distribution")
    chunk_size: int = Field(1 << 20, ge=1024, description="elements regenerated per chunk")
    compile: bool = Field(False, description="regenerate and apply the portable directions with compiled kernels, "
                          "bitwise the uncompiled path: on a CPU a C kernel built at first use (FEDZO_NATIVE_LANES=0: "
                          "none), else torch.compile (CUDA weights take the fused Triton kernel either way)")
    mask: Literal["none", "random", "magnitude"] = Field(
        "none", description="sparse perturbation mask: random (seeded, no memory) or magnitude (the smallest "
        "initial weights, 1 bit per trainable parameter); federated, every party builds it from the initial weights")
    mask_density: float = Field(0.1, gt=0, le=1, description="fraction of elements a mask perturbs")
    blockwise: bool = Field(False, description="perturb one block (layer) per direction (centralized runs)")

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, v: str) -> str:
        return ESTIMATORS.check(v)

    @model_validator(mode="after")
    def _mask_chunks(self) -> ZOConfig:
        if self.mask == "magnitude" and self.chunk_size % 8:
            raise ValueError("a magnitude mask needs zo.chunk_size to be a multiple of 8")
        return self

    @property
    def centralized_only(self) -> list[str]:
        """The keys set to something only a centralized run supports."""
        return [f"zo.{k}" for k in ("compile", "blockwise") if getattr(self, k)]


class OptimizerConfig(Section):
    """The optimizer and its learning-rate schedule."""

    name: str = Field("zo-sgd", description="optimizer: " + " | ".join(OPTIMIZERS.names())
                      + " (zo-*: forward only; fo-*: backprop; a federated run needs a federated one)")
    lr: float = Field(1e-6, gt=0, description="learning rate")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="learning-rate schedule")
    warmup: int = Field(0, ge=0, description="linear warm-up, in steps (centralized) or rounds (federated)")
    hybrid_fo: Literal["none", "head", "last-block"] = Field(
        "none", description="backprop this part and ZO the rest (centralized zo-* runs)")
    fo_lr: float = Field(1e-4, gt=0, description="learning rate of the backprop part (hybrid_fo)")
    checkpointing: bool = Field(False, description="backprop (fo-*): activation checkpointing, each layer keeps "
                                "only its input and recomputes the rest in the backward pass (less memory, one more "
                                "forward); the memory model and the clock price both")

    @field_validator("name")
    @classmethod
    def _known_optimizer(cls, v: str) -> str:
        return OPTIMIZERS.check(v)

    @model_validator(mode="after")
    def _hybrid_needs_zo(self) -> OptimizerConfig:
        problems = []
        if self.hybrid_fo != "none" and not is_zo(self.name):
            problems.append("optimizer.hybrid_fo needs a zo-* optimizer (it backprops only its part)")
        if self.checkpointing and is_zo(self.name):
            problems.append(f"optimizer.checkpointing is for backprop (fo-*); {self.name!r} keeps no activations")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def is_zo(self) -> bool:
        """Forward-only (True) or backprop (False)."""
        return is_zo(self.name)


class RuntimeConfig(Section):
    """Where, with how many threads and how compiled the run computes."""

    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="where to compute (auto: CUDA when present)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process (default: all cores); a "
                                "simulation-engine client runs at most the CPUs Ray reserved for it "
                                "(federation.simulation.num_cpus)")
    forward: ForwardMode = Field(
        "eager", description="how the model's forward passes run without autograd (ZO losses, evaluation): eager; "
        "compiled (torch.compile, one graph per padded batch shape: widths and rows rounded up to buckets, 16, 24, "
        "32, 48, 64, ... tokens); graphs (the same, replayed as CUDA graphs on CUDA, compiled without them on a "
        "CPU). Scores change by float rounding only; backprop, forward gradients and the batched engine's per-row "
        "state stay eager")


def precision_problems(model: ModelConfig, runtime: RuntimeConfig) -> list[str]:
    """What the scenario alone shows is wrong with ``model.dtype`` (the device is checked
    again where the run starts, for ``runtime.device: auto``)."""
    if model.dtype == "fp16" and runtime.device == "cpu":
        return [("model.dtype: 'fp16' needs a CUDA device but runtime.device is 'cpu'; allowed on CPU: fp32, "
                "bf16 (or set runtime.device to cuda or auto on a machine with a GPU)")]
    return []
