"""Centralized (single-process) fine-tuning: the baseline every federated run is compared to.

ZO runs log every direction to the update log, so the trained model is the initial
model plus the log's replay; a killed run resumes by replaying the log and continues
with bitwise the same result. First-order runs checkpoint their trainable tensors and
optimiser state at every evaluation instead.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from fedzo.errors import ConfigError
from fedzo.runs import RunDir, accuracy_summary, peak_rss_bytes
from fedzo.zo import (
    BlockSchedule, EstimatorConfig, LogEntry, MagnitudeMask, NoiseSpec, ParamSet, Perturber,
    RandomMask, Schedule, UpdateLog, check_signature, default_blocks, derive_seed,
    make_zo_optimizer, param_digest, param_signature, replay,
)
from fedzo.zo.first_order import FO_OPTIMIZERS, FOTrainer, HybridZOFO
from fedzo.zo.optimizers import ZO_OPTIMIZERS

_BATCH_TAG = 0xBA7C
_STEP_TAG = 0x57E9

OptimizerName = Literal["zo-sgd", "zo-sgd-sign", "zo-sgd-cons", "zo-sgd-mmt", "zo-adam", "fo-sgd", "fo-adam"]


class TrainConfig(BaseModel):
    """Every option of a centralized run; field descriptions double as ``--help`` text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("train", description="run name (shown in plots and reports)")
    model: str = Field("smollm2-135m", description="embedded model name, local directory or hub id")
    task: str = Field("rotten-tomatoes", description="embedded task name, hf:<dataset> or a local dataset path")
    prompt: str | None = Field(None, description="prompt template name (causal LMs); default: the task's best")
    peft: Literal["full", "lora", "prefix", "prompt"] = Field("full", description="which parameters are trained")
    lora_rank: int = Field(8, ge=1, description="LoRA rank (peft: lora)")
    virtual_tokens: int = Field(10, ge=1, description="virtual tokens (peft: prefix/prompt)")
    optimizer: OptimizerName = Field("zo-sgd", description="optimizer (zo-* forward-only, fo-* backprop)")
    lr: float = Field(1e-6, gt=0, description="learning rate")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="learning-rate schedule")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    eps: float = Field(1e-3, gt=0, description="ZO perturbation scale")
    q: int = Field(1, ge=1, description="ZO directions per step")
    estimator: Literal["central", "one-sided"] = Field("central", description="finite-difference scheme")
    generator: Literal["portable", "torch"] = Field("portable", description="direction generator")
    distribution: Literal["gaussian", "rademacher"] = Field("gaussian", description="direction distribution")
    chunk_size: int = Field(1 << 20, ge=1024, description="elements regenerated per chunk")
    compile: bool = Field(False, description="compile the portable generator with torch.compile")
    mask: Literal["none", "random", "magnitude"] = Field("none", description="sparse perturbation mask")
    mask_density: float = Field(0.1, gt=0, le=1, description="fraction of elements perturbed by a mask")
    blockwise: bool = Field(False, description="perturb one block (layer) per direction")
    hybrid_fo: Literal["none", "head", "last-block"] = Field("none", description="backprop this part, ZO the rest")
    fo_lr: float = Field(1e-4, gt=0, description="learning rate of the backprop part (hybrid)")
    steps: int = Field(1000, ge=1, description="optimizer steps")
    batch_size: int = Field(16, ge=1, description="examples per step")
    max_length: int | None = Field(None, ge=8, description="token limit per example (default: the task's)")
    eval_every: int = Field(100, ge=1, description="evaluate every N steps (and at step 0 and the end)")
    eval_split: Literal["dev", "test"] = Field("dev", description="split evaluated during training")
    eval_examples: int | None = Field(None, ge=1, description="evaluate on the first N examples only")
    train_examples: int | None = Field(None, ge=1, description="train on the first N examples only")
    eval_batch_size: int = Field(32, ge=1, description="batch size for evaluation")
    seed: int = Field(0, ge=0, description="run seed (data order, directions)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: all cores)")
    device: Literal["cpu", "cuda", "auto"] = Field("auto", description="where to train")

    @model_validator(mode="after")
    def _combinations(self) -> TrainConfig:
        fo = self.optimizer in FO_OPTIMIZERS
        if fo and self.hybrid_fo != "none":
            raise ValueError("hybrid_fo needs a zo-* optimizer (it backprops only its part)")
        if self.optimizer == "zo-sgd-mmt" and self.blockwise:
            raise ValueError("zo-sgd-mmt cannot be combined with blockwise perturbation")
        if self.mask == "magnitude" and self.chunk_size % 8:
            raise ValueError("a magnitude mask needs chunk_size to be a multiple of 8")
        return self


@dataclass
class Objective:
    """What training touches: the classifier module and its data."""

    classifier: nn.Module
    train: list[Any]
    eval: list[Any]
    device: torch.device


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available; allowed here: cpu, auto")
    return torch.device(name)


def build_objective(cfg: TrainConfig) -> Objective:
    """Load model, task and PEFT wrapping; returns the classifier and its splits."""
    from fedzo.models import load_model
    from fedzo.models.adapters import apply_peft
    from fedzo.tasks import build_classifier, load_task

    device = resolve_device(cfg.device)
    loaded = load_model(cfg.model)
    task = load_task(cfg.task, seed=cfg.seed)
    loaded.model = apply_peft(loaded.model, cfg.peft, r=cfg.lora_rank, num_virtual_tokens=cfg.virtual_tokens)
    clf = build_classifier(loaded, task, cfg.prompt, max_length=cfg.max_length).to(device)
    clf.eval()
    train = list(task.train[: cfg.train_examples] if cfg.train_examples else task.train)
    split = task.dev if cfg.eval_split == "dev" else task.test
    evals = list(split[: cfg.eval_examples] if cfg.eval_examples else split)
    if not train or not evals:
        raise ConfigError(f"task {cfg.task!r}: empty train or {cfg.eval_split} split")
    return Objective(clf, train, evals, device)


def step_batch(clf: Any, examples: list[Any], cfg: TrainConfig, step: int, device: torch.device) -> Any:
    """The minibatch of ``step``: a pure function of (seed, step), so resume is exact."""
    rng = random.Random(derive_seed(cfg.seed, _BATCH_TAG, step))
    picked = rng.sample(examples, min(cfg.batch_size, len(examples)))
    return next(iter(clf.batches(picked, len(picked)))).to(device)


def make_perturber(params: ParamSet, cfg: TrainConfig) -> Perturber:
    """The Perturber a config describes (noise spec, mask, blocks)."""
    spec = NoiseSpec(cfg.generator, cfg.distribution, cfg.chunk_size)
    mask = None
    if cfg.mask == "random":
        mask = RandomMask(cfg.mask_density, derive_seed(cfg.seed, 0x3A5C))
    elif cfg.mask == "magnitude":
        mask = MagnitudeMask(params, cfg.mask_density)
    blocks = BlockSchedule(default_blocks(params)) if cfg.blockwise else None
    return Perturber(params, spec, mask=mask, blocks=blocks, compiled=cfg.compile)


def _fo_selector(clf: nn.Module, part: str) -> Any:
    if part == "head":
        base = {id(p) for p in clf.model.parameters()}  # type: ignore[union-attr]
        head = [p for p in clf.parameters() if id(p) not in base]
        if not head:
            raise ConfigError("hybrid_fo: 'head' but this classifier has no separate head "
                              "(causal-LM prompt classifiers use the LM head); allowed: last-block")
        ids = {id(p) for p in head}
        return lambda n, p: id(p) in ids
    blocks = default_blocks(ParamSet.from_module(clf))
    names = ParamSet.from_module(clf).names
    last = {names[i] for i in blocks[-1]}
    return lambda n, p: n in last


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, force: bool = False,
          progress: bool = True, objective: Objective | None = None) -> dict[str, Any]:
    """Run (or resume) centralized training into run directory ``out``; returns the summary."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg_dump = {"kind": "train", **cfg.model_dump()}
    if resume:
        run = RunDir.open(out)
        stored = run.config()
        if stored != cfg_dump:
            changed = sorted(k for k in set(stored) | set(cfg_dump) if stored.get(k) != cfg_dump.get(k))
            raise ConfigError(f"{out}: cannot resume with a changed configuration (changed: {', '.join(changed)})")
    else:
        run = RunDir.create(out, cfg_dump, force=force)
    obj = objective or build_objective(cfg)
    clf = obj.classifier
    is_fo = cfg.optimizer in FO_OPTIMIZERS
    schedule = Schedule(cfg.lr, cfg.schedule, cfg.steps, cfg.warmup_steps)
    est = EstimatorConfig(cfg.estimator, cfg.eps, cfg.q)

    hybrid: HybridZOFO | None = None
    fo: FOTrainer | None = None
    perturber: Perturber | None = None
    zo_opt = None
    if is_fo:
        fo = FOTrainer(clf, cfg.optimizer, cfg.lr)
    elif cfg.hybrid_fo != "none":
        zo_opt = make_zo_optimizer(cfg.optimizer)
        hybrid = HybridZOFO(clf, _fo_selector(clf, cfg.hybrid_fo), lambda ps: make_perturber(ps, cfg),
                            zo_opt, fo_lr=cfg.fo_lr)
        perturber = hybrid.perturber
    else:
        zo_opt = make_zo_optimizer(cfg.optimizer)
        perturber = make_perturber(ParamSet.from_module(clf), cfg)

    # ---- where a resumed run picks up: the last round present in metrics AND state ------
    done = 0  # last completed step
    log: UpdateLog | None = None
    if resume:
        recorded = [int(r["round"]) for r in run.read_metrics() if r.get("kind") == "round"]
        done = max(recorded) if recorded else 0
    if perturber is not None:
        header = {
            "param_signature": param_signature(perturber.params),
            "param_count": len(perturber.params), "param_numel": perturber.params.numel,
            "noise": perturber.spec.to_dict(), "optimizer": cfg.optimizer,
            "initial_digest": param_digest(perturber.params),
        }
        if resume and run.log_path.exists():
            log, _ = UpdateLog.load(run.log_path, repair=True)
            check_signature(log, perturber.params)
            if log.header.get("initial_digest") != header["initial_digest"]:
                raise ConfigError(f"{out}: the initial model differs from the one this run started from")
            if hybrid is not None and (log.last_round or 0) > 0:
                raise ConfigError(f"{out}: hybrid ZO-FO runs cannot be resumed (the FO part is not logged)")
            done = min(done, log.last_round or 0)
            log.truncate(done)
            fresh = make_zo_optimizer(cfg.optimizer) if zo_opt is not None and zo_opt.stateful else None
            replay(perturber, log.entries(), fresh)
            if fresh is not None:
                zo_opt = fresh
        else:
            done = 0
            if run.log_path.exists():
                run.log_path.unlink()
            log = UpdateLog.create(header, run.log_path)
    elif resume:
        ckpt = run.state_dir / "fo.pt"
        if ckpt.exists():
            state = torch.load(ckpt, weights_only=False)
            clf.load_state_dict(state["model"], strict=False)
            assert fo is not None
            fo.opt.load_state_dict(state["opt"])
            done = min(done, int(state["step"]))
        else:
            done = 0
    prior = [r for r in (run.truncate_metrics(done) if resume else []) if r.get("kind") == "round"]
    host_offset = float(prior[-1]["host_seconds"]) if prior else 0.0

    def evaluate() -> dict[str, Any]:
        return clf.evaluate(obj.eval, cfg.eval_batch_size)  # type: ignore[operator]

    def grad_loss(batch: Any) -> Any:
        return lambda: clf.loss(batch)  # type: ignore[operator]

    def zo_loss(batch: Any) -> Any:
        def f() -> float:
            with torch.no_grad():
                return float(clf.loss(batch))  # type: ignore[operator]
        return f

    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, initial=done, disable=not progress, desc=cfg.name, unit="step")
    host = host_offset
    losses: list[float] = []
    if not prior:
        run.append_metrics([_round_record(0, host, None, evaluate())])
    for step in range(done + 1, cfg.steps + 1):
        batch = step_batch(clf, obj.train, cfg, step, obj.device)
        lr = schedule(step - 1)
        t0 = time.perf_counter()
        if fo is not None:
            loss = fo.step(grad_loss(batch), lr)
            entries: list[LogEntry] = []
        elif hybrid is not None:
            res, _ = hybrid.step(zo_loss(batch), grad_loss(batch), derive_seed(cfg.seed, _STEP_TAG, step), est, lr)
            loss = res.loss
            entries = [LogEntry(step, d.seed, d.alphas, d.grad, d.lr) for d in res.directions]
        else:
            assert perturber is not None and zo_opt is not None
            from fedzo.zo import zo_step

            res = zo_step(perturber, zo_loss(batch), derive_seed(cfg.seed, _STEP_TAG, step), est, zo_opt, lr)
            loss = res.loss
            entries = [LogEntry(step, d.seed, d.alphas, d.grad, d.lr) for d in res.directions]
        host += time.perf_counter() - t0
        losses.append(loss)
        if log is not None:
            log.append_round(step, entries)
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        if is_eval or step % max(1, cfg.eval_every // 10) == 0:
            m = evaluate() if is_eval else None
            rec = _round_record(step, host, sum(losses) / len(losses), m)
            losses = []
            if fo is not None and is_eval:
                torch.save({"model": {k: v for k, v in clf.state_dict().items()}, "opt": fo.opt.state_dict(),
                            "step": step}, run.state_dir / "fo.pt")
            run.append_metrics([rec])
            bar.set_postfix(loss=f"{rec['train_loss']:.4f}",
                            acc="-" if rec["eval_accuracy"] is None else f"{rec['eval_accuracy']:.3f}")
        bar.update(1)
    bar.close()
    summary = _summary(cfg, run, clf, perturber)
    run.write_summary(summary)
    run.write_plots()
    return summary


def _round_record(step: int, host: float, loss: float | None, m: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "kind": "round", "round": step, "sim_seconds": host, "host_seconds": host,
        "bytes_up": 0, "bytes_down": 0, "train_loss": loss,
        "eval_accuracy": None if m is None else m["accuracy"],
        "eval_macro_f1": None if m is None else m["macro_f1"],
        "participants": 1, "round_sim_seconds": None,
    }


def _summary(cfg: TrainConfig, run: RunDir, clf: nn.Module, perturber: Perturber | None) -> dict[str, Any]:
    records = run.read_metrics()
    rounds = [r for r in records if r.get("kind") == "round"]
    params = perturber.params if perturber is not None else ParamSet.from_module(clf, lambda n, p: True)
    return {
        "name": cfg.name, "model": cfg.model, "optimizer": cfg.optimizer, "peft": cfg.peft,
        "method": "bp" if cfg.optimizer in FO_OPTIMIZERS else "zo",
        **accuracy_summary(records),
        "steps": cfg.steps,
        "sim_seconds": rounds[-1]["sim_seconds"] if rounds else 0.0,
        "host_seconds": rounds[-1]["host_seconds"] if rounds else 0.0,
        "bytes_up": 0, "bytes_down": 0,
        "peak_client_memory_bytes": peak_rss_bytes(),
        "model_sha256": param_digest(params),
    }
