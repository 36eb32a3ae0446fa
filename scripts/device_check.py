"""The GPU checks of fedzo, in one script that writes one JSON (run by scripts/device_check.sh).

Made for a lent accelerator with only torch, transformers and peft installed (no Flower,
Ray, pydantic or datasets): checks 1-7 import only ``fedzo.zo`` and the memory model, whose
package (``fedzo.devices``) imports pydantic, and the engines checks need Flower too, so
every check needs the wheels ``scripts/device_prepare.sh`` carries (``device_check.sh``
installs them); it builds its models from their configs (random weights, no downloads). Fourteen checks (numbered as they were
added; they run in the order engines, decomfl, timing, fused_direction, compiled_forward,
then the rest, full_rows and decomfl_graphs last, so a timeout loses the least of the headline keys):

0. ``engines``: ``fedzo bench engines`` on the device (in-process against batched engine,
   tiny model at 100 participants; SmolLM2-135M at 100 participants, one local step of
   8 x 64 tokens: prompt tuning in bf16 and in fp32, and full-parameter ZO in fp32), from
   ``scripts/device_engines.py``; it needs Flower and pydantic, which the shell script
   installs from carried wheels, and is recorded as skipped without them. Headline keys
   (named after the device type, ``cuda`` on a GPU): ``client_steps_per_second_cuda_100``
   (bf16 prompt tuning, batched engine), ``..._fp32``, ``..._full``,
   ``batched_over_inprocess_cuda_100_full``, and ``batched_over_inprocess_tiny_100`` and
   ``batched_over_inprocess_smollm2_100`` (fp32 prompt tuning).
10. ``decomfl``: a DeComFL-shaped run (SmolLM2-135M from its config, 2 of 8 clients a round,
   5 directions, one local step of 32 x 64 tokens, fp32, evaluation every 25 rounds) through
   `fedzo run` (the round engine, Flower messages, the in-process engine), each round's wall
   seconds taken as its record lands, up to 200 rounds or ``--decomfl-seconds``:
   ``decomfl_2000_rounds_seconds`` is 2,000 x the seconds a round, a projection from the
   rounds measured (``decomfl.rounds_measured``). Needs Flower, as the engines check.
   ``decomfl_graphs`` (run last, as time allows): the same under ``runtime.forward: graphs``,
   measured from round 1's record on (compilation left out, up to 150 s for it);
   ``decomfl_2000_rounds_seconds`` is then the faster of the two, ``decomfl_forward`` its mode.

1. ``known_answers``: the portable generator's golden vectors on the device, eager and
   compiled (``python -m fedzo.zo.known_answers --device DEVICE``).
2. ``timing``: one ZO step (central estimator, q = 1, portable Gaussian, eager and compiled
   perturbation) against two forward passes, and one backprop + Adam step, on SmolLM2-135M
   built from its config: the ratios the CPU benchmark reports, on this device.
11. ``compiled_forward``: the ZO step and two forwards under each ``runtime.forward`` mode
   (``--forward-modes``, default eager and graphs: CUDA graphs on CUDA; compiled costs one more
   compilation), through the classifier's own compiled forward (``scripts/device_forward.py``),
   the first calls (compilation, graph recording) timed apart. Headline keys
   ``step_over_two_forwards_cuda_graphs`` and ``two_forwards_seconds_cuda_graphs`` (one pair
   per mode), and ``step_over_two_forwards_cuda`` / ``two_forwards_seconds_cuda``: the mode
   with the fastest forwards, named by ``step_over_two_forwards_cuda_mode`` (the ``timing``
   check's eager step where this check did not run).
3. ``forward_gradient``: one forward-gradient ZO step (``zo.estimator: forward-grad``: a
   forward with tangents through SDPA's math kernel) against two forward passes, with its
   peak against the memory model's (all weights trained: the direction is a dense copy).
4. ``joint_forward``: what the batched engine buys here: C clients' forward passes of 8
   rows, one after another, against one joint pass of 8 C rows (C = 1, 8, 32, 64).
5. ``half_precision``: five ZO steps in each half dtype the device runs (fp16 and bf16 on
   CUDA, bf16 on CPU), replayed from their seeds and scalars on a copy of the starting
   weights: bitwise equal or not, the step against two fp32 forwards, and the peak against
   the memory model's in that dtype.
6. ``protocol_rounds``: a DeComFL-style run of the seeds-and-scalars protocol (2 of 8
   clients per round, 1 local step, 5 directions, central differences; the server averages
   each direction's scalars and replays the update), its client steps one client after
   another (the in-process engine's arithmetic) and with both clients' rows in one pass per
   perturbed point (the batched engine's shared mode). The protocol's compute only: no
   Flower messages (Flower is not installed there). Timed over up to 300 rounds or
   ``--protocol-seconds`` per variant, extrapolated to 2000 rounds (an extrapolation,
   labelled so); DeComFL's own loop reports 1,463 s for OPT-125M on SST-2.
7. ``memory``: the peak of allocated tensors (``torch.cuda.max_memory_allocated``, exact on
   CUDA) of each step against the memory model's tensor bytes (weights, optimizer states and
   the largest phase, without the CPU allocator's slack), counted above the bytes still
   allocated when the check began (``leftover_allocated_bytes_not_counted``; the engines
   check leaves the process's cached client worker, which it now releases).
8. ``regeneration``: one regeneration of a seeded direction over every weight, eager and
   compiled, at chunks of 1M and 16M elements, with their peaks, and whether both
   chunkings draw the same direction bitwise (``scripts/device_generator.py``): the cost
   that dominates the ZO step and the protocol loop on a GPU.
9. ``fused_direction``: the fused Triton kernel (``fedzo/zo/triton_direction.py``, which a
   Perturber on CUDA uses by default) regenerating a Gaussian and a Rademacher direction
   over every weight, against a copy of the weights and a gather-only pass through the
   Gaussian table (the ceilings: memory speed, and what the table costs), its directions
   against the chunked path's and the known answers
   (``fused_direction_fraction_of_copy_bandwidth``: 1.0 is a regeneration at copy speed),
   in fp32 and over bf16 copies of the weights: ``regeneration_fraction_of_copy_bandwidth_cuda``
   holds both. ``step_over_two_forwards_cuda`` (with ``two_forwards_seconds_cuda``) is the
   ``compiled_forward`` check's ZO step in its fastest forward mode, the Perturber's default
   path (the fused kernel on CUDA).
12. ``full_rows``: full-parameter ZO with 2 local steps, 32 participants (SmolLM2-135M,
   batch 8 x 64, fp32), in-process against batched engine (``scripts/device_engines.py``):
   each client moves its own copy of the model, which the batched engine keeps stacked and
   runs whole clients per pass, one batched matmul per linear
   (``fedzo/federation/transports/batched/stacked.py``). Keys
   ``client_steps_per_second_cuda_32_full_k2`` and ``batched_over_inprocess_cuda_32_full_k2``.

A check that raises is recorded (``error``, ``traceback``) and the others still run; the
exit status is 1 if any failed, if the known answers or the half-precision replays differ,
or if the batched engine fell back to one client at a time on the device.

    python scripts/device_check.py --out device_check.json            # cuda when present
    python scripts/device_check.py --device cpu --model tiny-llama    # a smoke run anywhere
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedzo.devices.architectures import model_config
from fedzo.devices.memory import estimate_memory
from fedzo.zo import (
    DirectionalLoss,
    EstimatorConfig,
    NoiseSpec,
    ParamSet,
    Perturber,
    make_zo_optimizer,
    module_along,
    zo_step,
)
from fedzo.zo.known_answers import check

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_common import build_model, loss_fn, median_seconds, peak_bytes, release  # the script folder
from device_engines import decomfl_check, device_kind, engines_check, full_rows_check
from device_forward import best_mode, compiled_forward
from device_generator import fused_direction, protocol_rounds, regeneration


def _predicted_tensors(name: str, mode: str, batch: int, seq: int, optimizer: str, forward_grad: bool = False,
                       dtype: str = "fp32") -> int:
    b = estimate_memory(model_config(name), mode, batch=batch, seq=seq, optimizer=optimizer,  # type: ignore[arg-type]
                        logits="last", runtime_overhead=0, forward_grad=forward_grad, dtype=dtype)
    return b.weights + b.optimizer_states + max(p for _, p in b.phases)


def timing_and_memory(name: str, device: str, batch: int, seq: int, repeats: int) -> dict[str, Any]:
    """ZO (eager and compiled perturbation) and backprop steps against two forwards, with their peaks."""
    model = build_model(name, device)
    loss = loss_fn(model, batch, seq, device)
    est, opt = EstimatorConfig("central", 1e-3, 1), make_zo_optimizer("zo-sgd")

    def forwards() -> None:
        with torch.no_grad():
            loss()
            loss()

    out: dict[str, Any] = {"model": name, "batch": batch, "seq": seq,
                           "two_forwards_seconds": median_seconds(forwards, device, repeats)}
    for compiled in (False, True):
        perturber = Perturber(ParamSet.from_module(model), NoiseSpec("portable", "gaussian"), compiled=compiled)

        def zo(p: Perturber = perturber) -> None:
            with torch.no_grad():
                zo_step(p, lambda: float(loss()), 0, est, opt, 0.0)

        key = "zo_compiled" if compiled else "zo_eager"
        seconds = median_seconds(zo, device, repeats)
        out[key] = {"seconds": seconds, "ratio_to_two_forwards": seconds / out["two_forwards_seconds"],
                    "peak_allocated_bytes": peak_bytes(zo, device)}
    out["zo_predicted_tensor_bytes"] = _predicted_tensors(name, "zo", batch, seq, "sgd")
    adam = torch.optim.Adam(model.parameters(), lr=0.0)

    def bp() -> None:
        adam.zero_grad(set_to_none=True)
        loss().backward()
        adam.step()

    seconds = median_seconds(bp, device, repeats)
    out["bp_adam"] = {"seconds": seconds, "ratio_to_two_forwards": seconds / out["two_forwards_seconds"],
                      "peak_allocated_bytes": peak_bytes(bp, device),
                      "predicted_tensor_bytes": _predicted_tensors(name, "bp", batch, seq, "adam")}
    for key, pred in (("zo_eager", out["zo_predicted_tensor_bytes"]), ("bp_adam", out["bp_adam"]["predicted_tensor_bytes"])):
        peak = out[key]["peak_allocated_bytes"]
        out[key]["memory_error"] = None if peak is None else (pred - peak) / peak
    return out


def forward_gradient(name: str, device: str, batch: int, seq: int, repeats: int) -> dict[str, Any]:
    """A forward-gradient ZO step on all weights against two forwards, with its peak."""
    model = build_model(name, device)
    loss = loss_fn(model, batch, seq, device)
    params = ParamSet.from_module(model)
    perturber = Perturber(params, NoiseSpec("portable", "gaussian"))
    est, opt = EstimatorConfig("forward-grad"), make_zo_optimizer("zo-sgd")
    directional = DirectionalLoss(lambda: float(loss()), module_along(model, params, loss))

    def forwards() -> None:
        with torch.no_grad():
            loss()
            loss()

    def step() -> None:
        zo_step(perturber, directional, 0, est, opt, 0.0)

    two = median_seconds(forwards, device, repeats)
    seconds = median_seconds(step, device, repeats)
    peak = peak_bytes(step, device)
    predicted = _predicted_tensors(name, "zo", batch, seq, "sgd", forward_grad=True)
    return {"model": name, "batch": batch, "seq": seq, "seconds": seconds, "two_forwards_seconds": two,
            "ratio_to_two_forwards": seconds / two, "peak_allocated_bytes": peak,
            "predicted_tensor_bytes": predicted, "memory_error": None if peak is None else (predicted - peak) / peak}


def joint_forward(name: str, device: str, batch: int, seq: int, repeats: int,
                  clients: tuple[int, ...] = (1, 8, 32, 64)) -> list[dict[str, Any]]:
    """What the batched engine buys on this device: C clients' forward passes of ``batch``
    rows each, one client after another, against one joint pass of ``C x batch`` rows."""
    model = build_model(name, device)
    out = []
    with torch.no_grad():
        for c in clients:
            one = loss_fn(model, batch, seq, device)
            joint = loss_fn(model, batch * c, seq, device)
            seq_s = median_seconds(lambda one=one, c=c: [one() for _ in range(c)], device, repeats)
            joint_s = median_seconds(joint, device, repeats)
            out.append({"clients": c, "rows_per_client": batch, "one_by_one_seconds": seq_s,
                        "joint_seconds": joint_s, "one_by_one_over_joint": seq_s / joint_s})
    return out


HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def half_precision(name: str, device: str, batch: int, seq: int, repeats: int, steps: int = 5) -> dict[str, Any]:
    """ZO steps in each half dtype, replayed bitwise (or not) from their seeds and scalars."""
    model = build_model(name, device)
    loss = loss_fn(model, batch, seq, device)

    def forwards() -> None:
        with torch.no_grad():
            loss()
            loss()

    fp32_forwards = median_seconds(forwards, device, repeats)
    est, opt = EstimatorConfig("central", 1e-3, 1), make_zo_optimizer("zo-sgd")
    out: dict[str, Any] = {"fp32_two_forwards_seconds": fp32_forwards}
    for dtype in ("fp16", "bf16") if device.startswith("cuda") else ("bf16",):
        model.to(HALF[dtype])
        params = ParamSet.from_module(model)
        start = ParamSet(params.names, tuple(t.clone() for t in params.tensors))
        perturber = Perturber(params, NoiseSpec("portable", "gaussian"))
        with torch.no_grad():
            results = [zo_step(perturber, lambda: float(loss()), s, est, opt, 1e-4) for s in range(steps)]
            replayer = Perturber(start, NoiseSpec("portable", "gaussian"))
            for r in results:
                for d in r.directions:
                    replayer.apply(d.seed, d.alphas)
        bitwise = all(torch.equal(a, b) for a, b in zip(params.tensors, start.tensors, strict=True))
        del start, replayer  # the replay's copy of the weights is not the step's memory

        def zo(p: Perturber = perturber) -> None:
            with torch.no_grad():
                zo_step(p, lambda: float(loss()), 0, est, opt, 0.0)

        seconds = median_seconds(zo, device, repeats)
        peak, pred = peak_bytes(zo, device), _predicted_tensors(name, "zo", batch, seq, "sgd", dtype=dtype)
        out[dtype] = {"replay_bitwise": bitwise, "steps": steps, "seconds": seconds,
                      "ratio_to_fp32_two_forwards": seconds / fp32_forwards,
                      "grads": [d.grad for r in results for d in r.directions],
                      "peak_allocated_bytes": peak, "predicted_tensor_bytes": pred,
                      "memory_error": None if peak is None else (pred - peak) / peak}
        model.float()
    return out


def forward_keys(kind: str, timing: dict[str, Any], forward: dict[str, Any]) -> dict[str, Any]:
    """The step-over-forwards headline: each forward mode's ratio and two forwards' seconds
    (``step_over_two_forwards_cuda_graphs``, ...), and unsuffixed, the mode with the fastest
    forwards (``..._mode`` names it); the ``timing`` check's eager step where the
    ``compiled_forward`` check did not run."""
    best = best_mode(forward)
    if best is None:
        return {f"step_over_two_forwards_{kind}": timing.get("zo_eager", {}).get("ratio_to_two_forwards"),
                f"two_forwards_seconds_{kind}": timing.get("two_forwards_seconds"),
                f"step_over_two_forwards_{kind}_mode": "eager" if timing.get("zo_eager") else None}
    out: dict[str, Any] = {f"step_over_two_forwards_{kind}": forward[best]["ratio_to_two_forwards"],
                           f"two_forwards_seconds_{kind}": forward[best]["two_forwards_seconds"],
                           f"step_over_two_forwards_{kind}_mode": best}
    for mode in forward["modes"]:
        out[f"step_over_two_forwards_{kind}_{mode}"] = forward[mode]["ratio_to_two_forwards"]
        out[f"two_forwards_seconds_{kind}_{mode}"] = forward[mode]["two_forwards_seconds"]
    return out


def summarize(result: dict[str, Any], failed: list[str]) -> bool:
    """Add the headline keys to ``result`` (the engines' two ratios, the batched engine's
    fallbacks, the failed checks, whether known answers and half-precision replays held);
    whether every check passed. A batched engine that fell back to one client at a time
    fails the engines check: its ratios then time the sequential path, not batching."""
    engines = result.get("engines", {})
    result["batched_over_inprocess_tiny_100"] = engines.get("batched_over_inprocess_tiny_100")
    result["batched_over_inprocess_smollm2_100"] = engines.get(  # fp32 prompt tuning (runs before 2026-12-08: "smollm2")
        "batched_over_inprocess_smollm2-fp32_100", engines.get("batched_over_inprocess_smollm2_100"))
    for part in (engines, result.get("full_rows", {})):
        result |= {k: v for k, v in part.items() if k.startswith((
            "client_steps_per_second_", "inprocess_client_steps", "batched_over_inprocess_cuda", "batched_over_inprocess_cpu"))}
    kind = device_kind(str(result["device"]))
    fused, timing = result.get("fused_direction", {}), result.get("timing", {})
    result[f"regeneration_fraction_of_copy_bandwidth_{kind}"] = {
        "fp32": fused.get("gaussian_fraction_of_copy_bandwidth"), "bf16": fused.get("bf16_gaussian_fraction_of_copy_bandwidth")}
    result |= forward_keys(kind, timing, result.get("compiled_forward", {}))
    runs = [r for r in (result.get("decomfl", {}), result.get("decomfl_graphs", {}))
            if r.get("decomfl_2000_rounds_seconds") is not None]
    best: dict[str, Any] = min(runs, key=lambda r: r["decomfl_2000_rounds_seconds"], default={})
    result["decomfl_2000_rounds_seconds"] = best.get("decomfl_2000_rounds_seconds")
    result["decomfl_forward"] = best.get("forward")
    notes = engines.get("results", [])
    result["batched_engine_fell_back"] = sorted({n for r in notes for n in r["batching"] if "sequential" in n})
    # half-precision clients run one at a time by the engine's rule (a joint bf16 pass would not
    # reproduce each client's scalars): recorded above, not a failure of the check
    if [n for n in result["batched_engine_fell_back"] if not n.startswith("sequential: model.dtype")]:
        failed = [*failed, "engines (the batched engine fell back to one client at a time)"]
    result["failed_checks"] = failed
    fused = result.get("fused_direction", {})
    result["fused_direction_fraction_of_copy_bandwidth"] = fused.get("gaussian_fraction_of_copy_bandwidth")
    # elements where the kernel's step differs from the CPU Perturber's (fp32, bf16): recorded, 0 is bitwise
    result["fused_update_mismatches_vs_cpu"] = fused.get("update_mismatches_vs_cpu")
    result["known_answers_ok"] = ("known_answers" not in failed and not any(result.get("known_answers", {}).values())
                                  and not fused.get("known_answers_mismatches"))
    result["half_precision_replay_ok"] = "half_precision" not in failed and all(
        v["replay_bitwise"] for k, v in result.get("half_precision", {}).items() if k in HALF)
    return not failed and result["known_answers_ok"] and result["half_precision_replay_ok"]


def main(argv: list[str] | None = None) -> int:
    """Run the checks and write one JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="device_check.json")
    p.add_argument("--work", default="/tmp/fedzo-device-engines", help="scratch folder of the engines check")
    p.add_argument("--decomfl-seconds", type=float, default=45.0, help="time cap of the DeComFL-shaped run")
    p.add_argument("--decomfl-rounds", type=int, default=200, help="rounds of the DeComFL-shaped run at most")
    p.add_argument("--engine-participants", type=int, nargs="+", default=[100],
                   help="SmolLM2 participants per round in the engines check")
    p.add_argument("--engine-tiny", type=int, default=100, help="tiny-model participants in the engines check")
    p.add_argument("--checks", nargs="+", help="run only these checks (default: all)")
    p.add_argument("--forward-modes", nargs="+", default=["eager", "graphs"],
                   help="runtime.forward modes the compiled_forward check times (eager, compiled, graphs; each "
                        "compiled one costs a compilation of the model)")
    p.add_argument("--protocol-seconds", type=float, default=10.0,
                   help="time cap per variant of the DeComFL-style protocol run (rounds: up to 300)")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "device": a.device, "device_name": torch.cuda.get_device_name() if a.device.startswith("cuda") else
        platform.processor() or platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
    }
    # the headline keys' checks first (a timeout keeps what finished), the compiling ones after the
    # plain timings: torch.compile's worker processes compete for the CPU
    checks: list[tuple[str, Callable[[], Any]]] = [
        ("engines", lambda: engines_check(a.device, Path(a.work), tuple(a.engine_participants), a.engine_tiny)),
        ("decomfl", lambda: decomfl_check(a.device, Path(a.work), a.decomfl_rounds, a.decomfl_seconds)),
        ("timing", lambda: timing_and_memory(a.model, a.device, a.batch, a.seq, a.repeats)),
        ("fused_direction", lambda: fused_direction(a.model, a.device, a.repeats)),
        ("compiled_forward", lambda: compiled_forward(a.model, a.device, a.batch, a.seq, a.repeats, a.forward_modes)),
        ("forward_gradient", lambda: forward_gradient(a.model, a.device, a.batch, a.seq, a.repeats)),
        ("joint_forward", lambda: joint_forward(a.model, a.device, 8, a.seq, a.repeats)),
        ("half_precision", lambda: half_precision(a.model, a.device, a.batch, a.seq, a.repeats)),
        ("regeneration", lambda: regeneration(a.model, a.device, a.repeats)),
        ("protocol_rounds", lambda: protocol_rounds(a.model, a.device, 8, a.seq, a.protocol_seconds)),
        ("known_answers", lambda: {mode: check(a.device, compiled=mode == "compiled")
                                   for mode in ("eager", "compiled")}),
        ("full_rows", lambda: full_rows_check(a.device, Path(a.work))),
        ("decomfl_graphs", lambda: decomfl_check(a.device, Path(a.work), a.decomfl_rounds, a.decomfl_seconds,
                                                 forward="graphs", from_round=1)),
    ]
    unknown = sorted(set(a.checks or []) - {k for k, _ in checks})
    if unknown:
        p.error(f"--checks: {', '.join(unknown)} not known; allowed: {', '.join(k for k, _ in checks)}")
    checks = [(k, run) for k, run in checks if not a.checks or k in a.checks]

    def write() -> None:  # rewritten after each check: a timeout keeps what was done
        result["seconds"] = time.perf_counter() - t0
        Path(a.out).write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")

    failed = []
    for key, run in checks:
        leftover = release(a.device)
        try:
            result[key] = run()
            if leftover and isinstance(result[key], dict):
                result[key]["leftover_allocated_bytes_not_counted"] = leftover
        except Exception as exc:  # noqa: BLE001  (one check failing is recorded; the others still run)
            failed.append(key)
            result[key] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(result[key]["traceback"], file=sys.stderr, flush=True)
        write()
    ok = summarize(result, failed)
    write()
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict | list)}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
