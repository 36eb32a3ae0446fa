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
from typing import Any

import torch
import torch.nn.functional as F

from fedzo.runs import peak_rss_bytes


def _setup(args: dict[str, Any]) -> tuple[Any, Any, Any]:
    from fedzo.models import load_model

    torch.manual_seed(0)
    if args.get("threads"):
        torch.set_num_threads(int(args["threads"]))
    loaded = load_model(args["model"])
    model = loaded.model
    model.eval()
    vocab = model.config.vocab_size
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


def _time(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _paired(fn: Any, loss_f: Any, repeats: int) -> tuple[float, float]:
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


def naive_mezo_step(params: list[torch.Tensor], loss_f: Any, seed: int, eps: float, lr: float) -> None:
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


def main(argv: list[str]) -> None:
    args = json.loads(argv[0])
    model, loss_t, loss_f = _setup(args)
    from fedzo.zo import EstimatorConfig, NoiseSpec, ParamSet, Perturber, make_zo_optimizer, zo_step

    params = ParamSet.from_module(model, lambda n, p: True)
    est = EstimatorConfig(eps=1e-3)
    opt = make_zo_optimizer("zo-sgd")
    mode = args["mode"]
    result: dict[str, Any] = {"mode": mode, "n_params": params.numel}
    if mode == "infer":
        loss_f()
        loss_f()
    elif mode == "zo":
        spec = NoiseSpec(args["generator"], args["distribution"], args["chunk_size"])
        pert = Perturber(params, spec, compiled=args["compile"])
        for s in range(2):
            zo_step(pert, loss_f, s, est, opt, 1e-7)
    elif mode == "mezo":
        for s in range(2):
            naive_mezo_step(list(params.tensors), loss_f, s, 1e-3, 1e-7)
    elif mode == "bp":
        ps = [p for p in model.parameters()]
        adam = torch.optim.Adam(ps, lr=1e-7)
        for _ in range(2):
            adam.zero_grad(set_to_none=True)
            loss_t().backward()
            adam.step()
    elif mode == "timing":
        reps = args["repeats"]
        result["forward_seconds"] = _time(loss_f, reps)
        variants = []
        for gen, dist in args["variants"]:
            spec = NoiseSpec(gen, dist, args["chunk_size"])
            compiled = args["compile"] and gen == "portable"
            pert = Perturber(params, spec, compiled=compiled)
            compile_s = None
            if compiled:
                t0 = time.perf_counter()
                pert.apply(123, (0.0,))
                compile_s = time.perf_counter() - t0
            seed = iter(range(10_000))
            step_s, ratio = _paired(lambda: zo_step(pert, loss_f, next(seed), est, opt, 1e-7), loss_f, reps)
            regen_s = _time(lambda: pert.apply(7, (0.0,)), reps)
            variants.append({"generator": gen, "distribution": dist, "compiled": compiled,
                             "compile_seconds": compile_s, "step_seconds": step_s,
                             "step_over_two_forwards": ratio, "regeneration_seconds": regen_s})
        result["variants"] = variants
        seed2 = iter(range(10_000))
        result["mezo_step_seconds"], result["mezo_step_over_two_forwards"] = _paired(
            lambda: naive_mezo_step(list(params.tensors), loss_f, next(seed2), 1e-3, 1e-7), loss_f, reps)
        ps = [p for p in model.parameters()]
        adam = torch.optim.Adam(ps, lr=1e-7)

        def bp() -> None:
            adam.zero_grad(set_to_none=True)
            loss_t().backward()
            adam.step()

        result["bp_step_seconds"], result["bp_step_over_two_forwards"] = _paired(bp, loss_f, reps)
    result["peak_rss_bytes"] = peak_rss_bytes()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
