"""Worker process of `fedzo bench zo`: loads one model and measures one thing.

Run as ``python -m fedzo.bench.zo_worker '<json>'``; prints one JSON line. Memory is
measured per mode in a fresh process (peak RSS of the whole process), timings of all
modes in one process so their ratios share the machine's state.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fedzo.errors import FedzoError
from fedzo.runs import peak_rss_bytes

if TYPE_CHECKING:
    from fedzo.zo import DistributionName, EstimatorConfig, GeneratorName, ParamSet, ZOOptimizer


def _setup(args: dict[str, Any]) -> tuple[nn.Module, Callable[[], torch.Tensor], Callable[[], float]]:
    from transformers import PreTrainedModel

    from fedzo.models import load_model

    torch.manual_seed(0)
    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    loaded = load_model(args["model"])
    model = loaded.model
    if not isinstance(model, PreTrainedModel):
        raise FedzoError(f"model {args['model']!r} is not a transformers model ({type(model).__name__})")
    model.eval()
    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (args["batch"], args["seq"]), generator=g)
    labels = torch.randint(0, 2, (args["batch"],), generator=g)
    label_ids = torch.tensor([vocab // 3, vocab // 2])

    def loss_t() -> torch.Tensor:
        # MeZO-style prompt loss: only the last position's logits, two label words
        out = model(input_ids=ids, logits_to_keep=1)
        return F.cross_entropy(out.logits[:, -1, label_ids], labels)

    def loss_f() -> float:
        with torch.no_grad():
            return float(loss_t())

    return model, loss_t, loss_f


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _paired(fn: Callable[[], object], loss_f: Callable[[], float], repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` and median of ``fn`` / (two forwards timed just before it).

    Pairing each step with the two forwards next to it cancels the drift of a shared
    machine (frequency, neighbours), which otherwise dominates a ratio of ~1.1.
    """
    fn()  # warm-up
    times, ratios = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        loss_f()
        loss_f()
        t1 = time.perf_counter()
        fn()
        t2 = time.perf_counter()
        times.append(t2 - t1)
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(times), statistics.median(ratios)


def naive_mezo_step(params: list[torch.Tensor], loss_f: Callable[[], float], seed: int, eps: float,
                    lr: float) -> None:
    """The MeZO reference recipe: framework Gaussian regenerated 4 times, out-of-place update."""

    def perturb(scale: float) -> None:
        torch.manual_seed(seed)
        for p in params:
            z = torch.normal(0, 1, size=p.shape, dtype=p.dtype)
            p.data = p.data + scale * z * eps

    perturb(1)
    f1 = loss_f()
    perturb(-2)
    f2 = loss_f()
    perturb(1)
    g = (f1 - f2) / (2 * eps)
    torch.manual_seed(seed)
    for p in params:
        z = torch.normal(0, 1, size=p.shape, dtype=p.dtype)
        p.data = p.data - lr * g * z


@dataclass
class _Bench:
    """What every measurement of one worker shares."""

    args: dict[str, Any]
    model: nn.Module
    params: ParamSet
    loss_t: Callable[[], torch.Tensor]
    loss_f: Callable[[], float]
    est: EstimatorConfig
    opt: ZOOptimizer


def _variant(b: _Bench, gen: GeneratorName, dist: DistributionName) -> dict[str, Any]:
    """Seconds of the fused ZO step (paired with two forwards) and of one regeneration."""
    from fedzo.zo import NoiseSpec, PerturberRecipe, zo_step

    reps = b.args["repeats"]
    spec = NoiseSpec(gen, dist, b.args["chunk_size"])
    compiled = b.args["compile"] and gen == "portable"
    pert = PerturberRecipe(spec, compile=compiled).build(b.params)
    compile_s = None
    if compiled:
        t0 = time.perf_counter()
        pert.apply(123, (0.0,))
        compile_s = time.perf_counter() - t0
    seed = iter(range(10_000))
    step_s, ratio = _paired(lambda: zo_step(pert, b.loss_f, next(seed), b.est, b.opt, 1e-7), b.loss_f, reps)
    regen_s = _time(lambda: pert.apply(7, (0.0,)), reps)
    return {"generator": gen, "distribution": dist, "compiled": compiled,
            "compile_seconds": compile_s, "step_seconds": step_s,
            "step_over_two_forwards": ratio, "regeneration_seconds": regen_s}


def _timing(b: _Bench) -> dict[str, Any]:
    """Forward, per-variant ZO step, MeZO reference and backprop timings, in one process."""
    reps = b.args["repeats"]
    result: dict[str, Any] = {"forward_seconds": _time(b.loss_f, reps)}
    result["variants"] = [_variant(b, gen, dist) for gen, dist in b.args["variants"]]
    # a plain copy of the same tensors: reads and writes the bytes a regeneration reads and writes
    copies = [t.detach().clone() for t in b.params.tensors]
    result["copy_seconds"] = _time(lambda: [c.copy_(t) for c, t in zip(copies, b.params.tensors, strict=True)], reps)
    result["trainable_bytes"] = sum(t.numel() * t.element_size() for t in b.params.tensors)
    seed2 = iter(range(10_000))
    result["mezo_step_seconds"], result["mezo_step_over_two_forwards"] = _paired(
        lambda: naive_mezo_step(list(b.params.tensors), b.loss_f, next(seed2), 1e-3, 1e-7), b.loss_f, reps)
    ps = list(b.model.parameters())
    adam = torch.optim.Adam(ps, lr=1e-7)

    def bp() -> None:
        adam.zero_grad(set_to_none=True)
        b.loss_t().backward()
        adam.step()

    result["bp_step_seconds"], result["bp_step_over_two_forwards"] = _paired(bp, b.loss_f, reps)
    return result


def _steps(b: _Bench, mode: str) -> None:
    """Two steps of ``mode`` (two forwards for ``infer``), for the process's peak RSS."""
    from fedzo.zo import NoiseSpec, PerturberRecipe, zo_step

    if mode == "infer":
        b.loss_f()
        b.loss_f()
    elif mode == "zo":
        spec = NoiseSpec(b.args["generator"], b.args["distribution"], b.args["chunk_size"])
        pert = PerturberRecipe(spec, compile=b.args["compile"]).build(b.params)
        for s in range(2):
            zo_step(pert, b.loss_f, s, b.est, b.opt, 1e-7)
    elif mode == "mezo":
        for s in range(2):
            naive_mezo_step(list(b.params.tensors), b.loss_f, s, 1e-3, 1e-7)
    elif mode == "bp":
        ps = list(b.model.parameters())
        adam = torch.optim.Adam(ps, lr=1e-7)
        for _ in range(2):
            adam.zero_grad(set_to_none=True)
            b.loss_t().backward()
            adam.step()


def main(argv: list[str]) -> None:
    """Measure the mode named in the JSON argument; prints one JSON line."""
    args = json.loads(argv[0])
    model, loss_t, loss_f = _setup(args)
    from fedzo.zo import EstimatorConfig, ParamSet, make_zo_optimizer

    params = ParamSet.from_module(model, lambda n, p: True)
    b = _Bench(args, model, params, loss_t, loss_f, EstimatorConfig(eps=1e-3), make_zo_optimizer("zo-sgd"))
    mode = args["mode"]
    result: dict[str, Any] = {"mode": mode, "n_params": params.numel}
    if mode == "timing":
        result.update(_timing(b))
    else:
        _steps(b, mode)
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
