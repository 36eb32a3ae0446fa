"""Centralized (single-process) fine-tuning: the baseline every federated run is compared to.

ZO runs log every direction to the update log, so the trained model is the initial
model plus the log's replay; a killed run resumes by replaying the log and continues
with bitwise the same result. First-order runs checkpoint their trainable tensors and
optimiser state at every evaluation instead.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Protocol

import torch

from fedzo.config.train import TrainConfig, train_config_from_dict
from fedzo.errors import ConfigError
from fedzo.models.adapters import enable_checkpointing
from fedzo.records import RoundRecord, Summary, accuracy_summary, eval_fields
from fedzo.runs import RunDir, open_run, peak_rss_bytes
from fedzo.tasks.batching import Batch
from fedzo.tasks.classifiers import Classifier
from fedzo.tasks.objective import Objective, build_objective
from fedzo.tasks.types import Example
from fedzo.zo import (
    DirectionalLoss,
    LogEntry,
    ParamSet,
    Perturber,
    Schedule,
    UpdateLog,
    ZOOptimizer,
    apply_entries,
    check_signature,
    default_blocks,
    derive_seed,
    make_zo_optimizer,
    module_along,
    param_digest,
    param_signature,
    zo_step,
)
from fedzo.zo.first_order import FOTrainer, HybridZOFO
from fedzo.zo.params import ParamPredicate
from fedzo.zo.seeds import BATCH_TAG, STEP_TAG
from fedzo.zo_parts import estimator_config, perturber_recipe


def step_batch(clf: Classifier, examples: list[Example], cfg: TrainConfig, step: int, device: torch.device) -> Batch:
    """The minibatch of ``step``: a pure function of (seed, step), so resume is exact."""
    rng = random.Random(derive_seed(cfg.seed, BATCH_TAG, step))
    picked = rng.sample(examples, min(cfg.data.batch_size, len(examples)))
    return next(iter(clf.batches(picked, len(picked)))).to(device)


def _fo_selector(clf: Classifier, part: str) -> ParamPredicate:
    if part == "head":
        base = {id(p) for p in clf.model.parameters()}
        head = [p for p in clf.parameters() if id(p) not in base]
        if not head:
            raise ConfigError("optimizer.hybrid_fo: 'head' but this classifier has no separate head "
                              "(causal-LM prompt classifiers use the LM head); allowed: last-block")
        ids = {id(p) for p in head}
        return lambda n, p: id(p) in ids
    params = ParamSet.from_module(clf)
    last = {params.names[i] for i in default_blocks(params)[-1]}
    return lambda n, p: n in last


class Stepper(Protocol):
    """One training step of some kind: returns the loss and the update-log entries."""

    perturber: Perturber | None

    def step(self, batch: Batch, step: int, lr: float) -> tuple[float, list[LogEntry]]:
        """Train on ``batch``; ``step`` numbers the step (its seed)."""


class ZOStepper:
    """A forward-only step over every trainable parameter."""

    def __init__(self, clf: Classifier, cfg: TrainConfig) -> None:
        self.clf, self.cfg = clf, cfg
        self.optimizer: ZOOptimizer = make_zo_optimizer(cfg.optimizer.name)
        self.perturber: Perturber | None = perturber_recipe(cfg.zo, cfg.seed).build(ParamSet.from_module(clf))
        self.est = estimator_config(cfg.zo)

    def loss_fn(self, batch: Batch) -> DirectionalLoss:
        """The no-grad loss on ``batch`` (and its derivative along a direction, for forward-grad)."""
        def f() -> float:
            with torch.no_grad():
                return float(self.clf.loss(batch))
        assert self.perturber is not None
        if not self.est.tangent_forwards_per_step:  # only forward-grad differentiates the loss
            return DirectionalLoss(f)
        return DirectionalLoss(f, module_along(self.clf, self.perturber.params, lambda: self.clf.loss(batch)))

    def step(self, batch: Batch, step: int, lr: float) -> tuple[float, list[LogEntry]]:
        """One ZO step; every direction is logged."""
        assert self.perturber is not None
        res = zo_step(self.perturber, self.loss_fn(batch), derive_seed(self.cfg.seed, STEP_TAG, step), self.est,
                      self.optimizer, lr)
        return res.loss, res.log_entries(step)


class HybridStepper(ZOStepper):
    """ZO on most parameters, backprop on the part ``optimizer.hybrid_fo`` names."""

    def __init__(self, clf: Classifier, cfg: TrainConfig) -> None:
        self.clf, self.cfg = clf, cfg
        self.optimizer = make_zo_optimizer(cfg.optimizer.name)
        self.est = estimator_config(cfg.zo)
        recipe = perturber_recipe(cfg.zo, cfg.seed)
        self.hybrid = HybridZOFO(clf, _fo_selector(clf, cfg.optimizer.hybrid_fo), recipe.build, self.optimizer,
                                 fo_lr=cfg.optimizer.fo_lr)
        self.perturber = self.hybrid.perturber

    def step(self, batch: Batch, step: int, lr: float) -> tuple[float, list[LogEntry]]:
        """A ZO step on the ZO part, then backprop on the FO part (the ZO part is logged)."""
        res, _ = self.hybrid.step(self.loss_fn(batch), lambda: self.clf.loss(batch),
                                  derive_seed(self.cfg.seed, STEP_TAG, step), self.est, lr)
        return res.loss, res.log_entries(step)


class FOStepper:
    """A backprop step (checkpointed, not logged)."""

    perturber = None

    def __init__(self, clf: Classifier, cfg: TrainConfig) -> None:
        self.clf = clf
        if cfg.optimizer.checkpointing:
            enable_checkpointing(clf.model)
        self.trainer = FOTrainer(clf, cfg.optimizer.name, cfg.optimizer.lr)

    def step(self, batch: Batch, step: int, lr: float) -> tuple[float, list[LogEntry]]:
        """Forward, backward, optimiser step."""
        return self.trainer.step(lambda: self.clf.loss(batch), lr), []

    def save(self, run: RunDir, step: int) -> None:
        """Checkpoint the trainable tensors and optimiser state."""
        torch.save({"model": dict(self.clf.state_dict()), "opt": self.trainer.opt.state_dict(), "step": step},
                   run.state_dir / "fo.pt")

    def restore(self, run: RunDir) -> int:
        """Load the checkpoint; returns its step (0 when there is none)."""
        ckpt = run.state_dir / "fo.pt"
        if not ckpt.exists():
            return 0
        state = torch.load(ckpt, weights_only=False)
        self.clf.load_state_dict(state["model"], strict=False)
        self.trainer.opt.load_state_dict(state["opt"])
        return int(state["step"])


def make_stepper(clf: Classifier, cfg: TrainConfig) -> ZOStepper | HybridStepper | FOStepper:
    """The stepper for the config's optimizer."""
    if not cfg.optimizer.is_zo:
        return FOStepper(clf, cfg)
    if cfg.optimizer.hybrid_fo != "none":
        return HybridStepper(clf, cfg)
    return ZOStepper(clf, cfg)


def _log_header(p: Perturber, cfg: TrainConfig) -> dict[str, Any]:
    return {"param_signature": param_signature(p.params), "param_count": len(p.params),
            "param_numel": p.params.numel, "noise": p.spec.to_dict(), "optimizer": cfg.optimizer.name,
            "initial_digest": param_digest(p.params)}


def _restore_log(run: RunDir, stepper: ZOStepper | HybridStepper, cfg: TrainConfig, resume: bool,
                 done: int) -> tuple[UpdateLog, int]:
    """Open the update log (resume: replay it onto the model); returns it and the last step in it."""
    p = stepper.perturber
    assert p is not None
    header = _log_header(p, cfg)
    if not resume or not run.log_path.exists():
        run.log_path.unlink(missing_ok=True)
        return UpdateLog.create(header, run.log_path), 0
    log, _ = UpdateLog.load(run.log_path, repair=True)
    check_signature(log, p.params)
    if log.header.get("initial_digest") != header["initial_digest"]:
        raise ConfigError(f"{run.path}: the initial model differs from the one this run started from")
    if isinstance(stepper, HybridStepper) and (log.last_round or 0) > 0:
        raise ConfigError(f"{run.path}: hybrid ZO-FO runs cannot be resumed (the FO part is not logged)")
    done = min(done, log.last_round or 0)
    log.truncate(done)
    if stepper.optimizer.stateful:  # replayed from the start with a fresh optimiser
        stepper.optimizer = make_zo_optimizer(cfg.optimizer.name)
        apply_entries(p, log.entries(), stepper.optimizer)
    else:
        apply_entries(p, log.entries())
    return log, done


def _restore(run: RunDir, stepper: ZOStepper | HybridStepper | FOStepper, cfg: TrainConfig,
             resume: bool) -> tuple[UpdateLog | None, int]:
    """Where a (resumed) run picks up: the last step present in metrics AND state."""
    done = max((r.round for r in run.rounds()), default=0) if resume else 0
    if isinstance(stepper, FOStepper):
        return None, min(done, stepper.restore(run)) if resume else 0
    return _restore_log(run, stepper, cfg, resume, done)


def _record(step: int, host: float, loss: float | None, m: dict[str, Any] | None) -> RoundRecord:
    # a centralized run has no simulated device: its time axis is the host's (no sim_seconds)
    return RoundRecord(round=step, host_seconds=host, train_loss=loss,
                       participants=1, **eval_fields(m))


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, force: bool = False,
          progress: bool = True, objective: Objective | None = None) -> Summary:
    """Run (or resume) centralized training into run directory ``out``; returns the summary."""
    from tqdm.auto import tqdm

    if cfg.runtime.threads:
        torch.set_num_threads(cfg.runtime.threads)
    run = open_run(out, cfg, "train", resume=resume, force=force, stored=train_config_from_dict)
    obj = objective or build_objective(cfg.model, cfg.data, cfg.runtime, cfg.seed)
    clf = obj.classifier
    stepper = make_stepper(clf, cfg)
    log, done = _restore(run, stepper, cfg, resume)
    prior = [r for r in (run.truncate_metrics(done) if resume else []) if isinstance(r, RoundRecord)]
    host = (prior[-1].host_seconds or 0.0) if prior else 0.0
    schedule = Schedule(cfg.optimizer.lr, cfg.optimizer.schedule, cfg.steps, cfg.optimizer.warmup)

    def evaluate() -> dict[str, Any]:
        return clf.evaluate(obj.eval, cfg.data.eval_batch_size)

    bar = tqdm(total=cfg.steps, initial=done, disable=not progress, desc=cfg.name, unit="step")
    if not prior:
        run.append([_record(0, host, None, evaluate())])
    losses: list[float] = []
    for step in range(done + 1, cfg.steps + 1):
        batch = step_batch(clf, obj.train, cfg, step, obj.device)
        t0 = time.perf_counter()
        loss, entries = stepper.step(batch, step, schedule(step - 1))
        host += time.perf_counter() - t0
        losses.append(loss)
        if log is not None:
            log.append_round(step, entries)
        is_eval = step % cfg.eval_every == 0 or step == cfg.steps
        if is_eval or step % max(1, cfg.eval_every // 10) == 0:
            rec = _record(step, host, sum(losses) / len(losses), evaluate() if is_eval else None)
            losses = []
            if isinstance(stepper, FOStepper) and is_eval:
                stepper.save(run, step)
            run.append([rec])
            bar.set_postfix(loss=f"{rec.train_loss:.4f}",
                            acc="-" if rec.eval_accuracy is None else f"{rec.eval_accuracy:.3f}")
        bar.update(1)
    bar.close()
    summary = _summary(cfg, run, clf, stepper.perturber)
    run.write_summary(summary)
    run.write_plots()
    return summary


def _summary(cfg: TrainConfig, run: RunDir, clf: Classifier, perturber: Perturber | None) -> Summary:
    rounds = run.rounds()
    params = perturber.params if perturber is not None else ParamSet.from_module(clf, lambda n, p: True)
    return Summary(
        name=cfg.name, model=cfg.model.name, optimizer=cfg.optimizer.name, peft=cfg.model.peft, dtype=cfg.model.dtype,
        method="zo" if cfg.optimizer.is_zo else "bp", **accuracy_summary(rounds), steps=cfg.steps,
        host_seconds=rounds[-1].host_seconds if rounds else 0.0,
        peak_client_memory_bytes=peak_rss_bytes(), model_sha256=param_digest(params))
