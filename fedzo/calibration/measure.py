"""Measuring fedzo's own training step on this machine (what ``fedzo calibrate`` runs).

A step is timed on the real objective (the model as fedzo loads and wraps it, the task's
classifier), on synthetic batches of the requested rows x width: ZO steps go through
:func:`fedzo.zo.zo_step` with the portable Gaussian generator, backprop steps through
:class:`fedzo.zo.first_order.FOTrainer`. Each point is the median of ``repeats`` steps
after two warm-up steps; the learning rate is 0, so the model does not drift. The
regeneration cost of a ZO group is timed (median too) on that group's own trainable tensors.

The median, not the fastest: the clock predicts what a typical client-round takes. On a
shared host, memory-bound work (the regenerations of full-weight ZO above all) is rarely as
fast as its fastest repeat: after a warm-up pass, eleven regenerations of SmolLM2's 135 M
weights in one process took 8.8-13.3 ns per element, median 11.2. Calibrations kept the fastest repeat until
2026-12-03 and priced SmolLM2's full-weight ZO client-rounds 40 % too cheap.
Benchmarks that compare two ways of doing the same work (GEMM scores, engine ratios) keep
the fastest.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

import torch

from fedzo.calibration.model import Host, Point
from fedzo.config.sections import DataConfig, ModelConfig, Precision, RuntimeConfig
from fedzo.devices.dims import ArchDims, arch_dims
from fedzo.devices.work import Optimizer, Tuning, step_work
from fedzo.environment import cpu_capability
from fedzo.models.adapters import base_model
from fedzo.tasks.batching import Batch
from fedzo.tasks.classifiers import Classifier
from fedzo.tasks.objective import build_objective
from fedzo.zo import (
    DirectionalLoss,
    EstimatorConfig,
    NoiseSpec,
    ParamSet,
    PerturberRecipe,
    make_zo_optimizer,
    module_along,
    zo_step,
)
from fedzo.zo.first_order import FOTrainer, torch_optimizer

SYNTHETIC_TASK_MODELS = ("tiny-llama", "tiny-bert")
REGEN_ELEMENTS = 1 << 24  # 16.8 M elements: long enough to time one pass well


def task_for(model: str) -> str:
    """The task a model is calibrated on (its classifier head and verbalizer)."""
    return "synthetic-sentiment" if model in SYNTHETIC_TASK_MODELS else "rotten-tomatoes"


def host_info(threads: int) -> Host:
    """What the reference machine is."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return Host(description=f"{platform.system()} {platform.machine()}", cpu=cpu, cores=os.cpu_count() or 1,
                threads=threads, torch=torch.__version__.split("+")[0], cpu_capability=cpu_capability(),
                benchmarks=host_benchmarks(threads))


def classifier(model: str, tuning: Tuning, threads: int, task: str | None = None,
               dtype: Precision = "fp32") -> Classifier:
    """The objective's classifier for ``model`` under ``tuning`` (on CPU, in ``dtype``), for
    ``task`` (default: :func:`task_for` the model)."""
    torch.set_num_threads(threads)
    peft = tuning.peft
    obj = build_objective(ModelConfig(name=model, peft=peft, lora_rank=tuning.lora_rank,
                                      virtual_tokens=tuning.virtual_tokens, dtype=dtype),
                          DataConfig(task=task or task_for(model), train_examples=8, eval_examples=8),
                          RuntimeConfig(device="cpu", threads=threads), seed=0)
    clf = obj.classifier
    if tuning.checkpointing:
        from fedzo.models.adapters import enable_checkpointing

        enable_checkpointing(clf.model)
    return clf


def arch_of(clf: Classifier) -> ArchDims:
    """Shape numbers of the classifier's base model."""
    return arch_dims(base_model(clf.model).config)


def synthetic_batch(clf: Classifier, rows: int, width: int, seed: int = 0) -> Batch:
    """``rows`` x ``width`` random token ids (no padding) with random labels."""
    g = torch.Generator().manual_seed(seed)
    vocab = len(clf.tokenizer)
    ids = torch.randint(3, vocab, (rows, width), generator=g)
    return Batch(ids, torch.ones_like(ids), torch.randint(0, clf.num_labels, (rows,), generator=g))


def step_times(step: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` timed calls of ``step``, after two warm-up calls."""
    step()  # warm-up: allocator, kernels, caches
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


ZO_OPTIMIZER_OF = {"sgd": "zo-sgd", "momentum": "zo-sgd-mmt", "adam": "zo-adam"}  # Tuning.optimizer -> ZO name


def step_function(clf: Classifier, tuning: Tuning) -> Callable[[Batch], object]:
    """A training step of ``tuning`` (q = 1; lr 0: the model stays as it is), to call per batch:
    ZO by central differences, or by forward gradients when ``tuning`` has tangent forwards.

    Its state (perturber, backprop optimizer) lives across calls, as within a client-round.
    """
    if tuning.method == "zo":
        perturber = PerturberRecipe(NoiseSpec("portable", "gaussian")).build(ParamSet.from_module(clf))
        est = EstimatorConfig("forward-grad" if tuning.tangent_forwards_per_step else "central", 1e-3, 1)
        opt = make_zo_optimizer(ZO_OPTIMIZER_OF[tuning.optimizer])

        def zo(batch: Batch) -> object:
            def loss() -> float:
                with torch.no_grad():
                    return float(clf.loss(batch))

            along = module_along(clf, perturber.params, lambda: clf.loss(batch))
            return zo_step(perturber, DirectionalLoss(loss, along), 0, est, opt, 0.0)

        return zo
    trainer = FOTrainer(clf, "fo-adam" if tuning.optimizer == "adam" else "fo-sgd", 0.0,
                        **({"momentum": 0.9} if tuning.optimizer == "momentum" else {}))
    return lambda batch: trainer.step(lambda: clf.loss(batch), 0.0)


def measure_points(model: str, tuning: Tuning, shapes: Sequence[tuple[int, int]], *, threads: int,
                   repeats: int) -> tuple[list[Point], float | None]:
    """Step seconds of ``model`` under ``tuning`` at each (rows, width) of ``shapes``, and for
    ZO the seconds per regenerated element on its trainable tensors (None for backprop)."""
    clf = classifier(model, tuning, threads)
    d = arch_of(clf)
    params = ParamSet.from_module(clf)
    regen = _regeneration(params, repeats) if tuning.method == "zo" else None
    points = []
    step = step_function(clf, tuning)
    for rows, width in shapes:
        batch = synthetic_batch(clf, rows, width)
        seconds = statistics.median(step_times(partial(step, batch), repeats))
        work = step_work(d, [(rows, width)], tuning, params.numel)
        points.append(Point(rows=rows, width=width, seconds=seconds, flops=work.flops,
                            regen_elements=work.regen_elements))
    return points, regen


def _regeneration(params: ParamSet, repeats: int) -> float:
    """Seconds per element of one portable-Gaussian pass over ``params`` (in place, scale 0; the
    median of ``repeats``)."""
    perturber = PerturberRecipe(NoiseSpec("portable", "gaussian")).build(params)
    return statistics.median(step_times(lambda: perturber.apply(1, (0.0,)), repeats)) / params.numel


def measure_regeneration(threads: int, repeats: int = 5) -> float:
    """Seconds per element of one portable-Gaussian regeneration pass over one large tensor
    (the catch-up replay's price when no ZO group of the model was measured)."""
    torch.set_num_threads(threads)
    return _regeneration(ParamSet.from_tensors({"w": torch.zeros(REGEN_ELEMENTS)}), repeats)


def measure_updates(threads: int, repeats: int = 5) -> tuple[dict[Optimizer, float], dict[Optimizer, float]]:
    """Seconds per element of a backprop optimizer (SGD, SGD with momentum 0.9, Adam: the
    optimizers :class:`fedzo.zo.first_order.FOTrainer` builds) over one large tensor: of one
    step (the median of ``repeats`` after two warm-ups), and of what a FedAvg client-round
    adds once (the tensor packed into the reply's arrays, an arriving array checked and
    loaded, and the first step's extra time, which allocates the optimizer's state)."""
    from fedzo.federation.wire.fedavg import check_arrays, load_arrays, params_to_arrays
    from fedzo.zo import ParamSet

    torch.set_num_threads(threads)
    step: dict[Optimizer, float] = {}
    round_: dict[Optimizer, float] = {}
    cases: tuple[tuple[Optimizer, str, dict[str, float]], ...] = (
        ("sgd", "fo-sgd", {}), ("momentum", "fo-sgd", {"momentum": 0.9}), ("adam", "fo-adam", {}))
    p = torch.nn.Parameter(torch.zeros(REGEN_ELEMENTS))
    params = ParamSet.from_tensors({"w": p.data})

    def arrays() -> None:
        record = params_to_arrays(params)
        check_arrays(params, record, "calibration")
        load_arrays(params, record)

    trip = statistics.median(step_times(arrays, repeats))
    for name, fo, hyper in cases:
        firsts, steady = [], []
        for _ in range(repeats):
            p.grad = torch.full_like(p, 1e-3)
            opt = torch_optimizer(fo, [p], 1e-3, **hyper)
            times = [time.perf_counter()]
            for _ in range(3):
                opt.step()
                times.append(time.perf_counter())
            firsts.append(times[1] - times[0])
            steady.append(times[3] - times[2])
        step[name] = statistics.median(steady) / REGEN_ELEMENTS
        round_[name] = (trip + max(0.0, statistics.median(firsts) - statistics.median(steady))) / REGEN_ELEMENTS
    return step, round_


GEMM_SIZES = (1024, 2048, 3072)


def gemm_flops(dtype: torch.dtype, threads: int, sizes: Sequence[int] = GEMM_SIZES, repeats: int = 3) -> float:
    """Sustained matrix-multiply FLOP/s (``torch.mm`` of square matrices, the best size).

    The same measurement as published GEMM tables for devices (square ``torch.mm``, best of
    several sizes after a warm-up), so a device's published figure divided by this one is
    a like-for-like speed ratio. FP64 GEMM stands in for HPL, which DGEMM dominates.
    """
    torch.set_num_threads(threads)
    best = 0.0
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, generator=g, dtype=dtype)
        b = torch.randn(n, n, generator=g, dtype=dtype)
        seconds = min(step_times(partial(torch.mm, a, b), repeats))
        best = max(best, 2.0 * n**3 / seconds)
    return best


def host_benchmarks(threads: int) -> dict[str, float]:
    """The reference host's scores on the benchmarks device profiles cite."""
    return {"gemm-fp32": gemm_flops(torch.float32, threads), "gemm-fp64": gemm_flops(torch.float64, threads)}
