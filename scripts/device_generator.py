"""The GPU check's generator checks (scripts/device_check.py): what regenerating seeded
directions costs on the device, alone and inside a DeComFL-style protocol loop.

``regeneration``: one regeneration of a direction over every weight of the model (the
portable Gaussian, applied with alpha 0), eager and compiled, at the default chunk of 1M
elements and at 16M, with the peak allocated bytes of each and whether both chunkings give
the same direction bitwise (the portable stream does not depend on chunking). A ZO step
regenerates three times, the server's replay once per entry.
``fused_direction``: the fused Triton kernel (:mod:`fedzo.zo.triton_direction`) over every
weight (one launch per dtype): Gaussian and Rademacher (no table) regenerations, a replay of
16 log entries in one pass against one application per entry (and whether the two agree
bitwise), against one copy of the weights
(the traffic a regeneration at memory speed would have: each weight read and written once)
and a gather-only pass (a random index per element looked up in the 256 KB Gaussian table:
what the table costs); whether its directions agree bitwise with the chunked path's and
with every known-answer vector, and in how many elements one step's update (fp32, bf16)
differs from the CPU Perturber's (``update_mismatches_vs_cpu``: 0 is bitwise).
``protocol_rounds``: see device_check.py's docstring.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from device_common import build_model, median_seconds, peak_bytes, sync

from fedzo.zo import NoiseSpec, ParamSet, Perturber

CHUNKS = (1 << 20, 1 << 24)


def regeneration(name: str, device: str, repeats: int) -> dict[str, Any]:
    """Seconds and peak bytes of one regeneration over the whole model, per mode and chunk."""
    model = build_model(name, device)
    params = ParamSet.from_module(model)
    numel = sum(t.numel() for t in params.tensors)
    out: dict[str, Any] = {"model": name, "elements": numel}
    for compiled in (False, True):
        for chunk in CHUNKS:
            p = Perturber(params, NoiseSpec("portable", "gaussian", chunk_size=chunk), compiled=compiled, fused=False)

            def regenerate(p: Perturber = p) -> None:
                p.apply(0, (0.0,))

            seconds = median_seconds(regenerate, device, repeats)
            out[f"{'compiled' if compiled else 'eager'}_chunk_{chunk}"] = {
                "seconds": seconds, "elements_per_second": numel / seconds,
                "peak_allocated_bytes": peak_bytes(regenerate, device)}
    first, last = (Perturber(params, NoiseSpec("portable", "gaussian", chunk_size=c), fused=False).direction(7)
                   for c in CHUNKS)
    out["chunkings_bitwise_equal"] = all(torch.equal(a, b) for a, b in zip(first, last, strict=True))
    return out


def _bf16_regeneration(tensors: list[torch.Tensor], device: str, repeats: int) -> dict[str, Any]:
    """The fused Gaussian regeneration over bf16 copies of ``tensors`` against a copy of them."""
    from fedzo.zo.triton_direction import apply_fused

    half = [t.detach().to(torch.bfloat16) for t in tensors]  # bf16 weights: half the bytes to move
    copies = [torch.empty_like(t) for t in half]
    regen = median_seconds(partial(apply_fused, half, 0, (0.0,)), device, repeats)
    copy = median_seconds(lambda: [c.copy_(t) for c, t in zip(copies, half, strict=True)], device, repeats)
    return {"bf16_gaussian_seconds": regen, "bf16_copy_seconds": copy,
            "bf16_gaussian_fraction_of_copy_bandwidth": copy / regen}


def fused_direction(name: str, device: str, repeats: int) -> dict[str, Any]:
    """Seconds of the fused kernel's regenerations and of their ceilings (see the module doc)."""
    import json
    import struct

    from fedzo.zo.known_answers import VECTORS
    from fedzo.zo.noise import gaussian_table
    from fedzo.zo.triton_direction import ENTRIES_PER_PASS, apply_entries_fused, apply_fused

    model = build_model(name, device)
    params = ParamSet.from_module(model)
    tensors = list(params.tensors)
    numel = sum(t.numel() for t in tensors)
    # one launch per dtype (a segment table covers the tensors), against one per tensor before
    out: dict[str, Any] = {"model": name, "elements": numel, "tensors": len(tensors),
                           "launches": len({t.dtype for t in tensors})}
    for dist in ("gaussian", "rademacher"):
        seconds = median_seconds(partial(apply_fused, tensors, 0, (0.0,), gaussian=dist == "gaussian"), device,
                                 repeats)
        out[dist] = {"seconds": seconds, "elements_per_second": numel / seconds}
    copies = [torch.empty_like(t) for t in tensors]
    out["copy_seconds"] = median_seconds(lambda: [c.copy_(t) for c, t in zip(copies, tensors, strict=True)],
                                         device, repeats)
    flat = torch.empty(numel, dtype=torch.float32, device=device)
    idx = torch.randint(0, 1 << 16, (numel,), device=device, dtype=torch.int64)
    table = gaussian_table(torch.device(device))
    out["gather_only_seconds"] = median_seconds(lambda: torch.take(table, idx, out=flat), device, repeats)
    out["gaussian_fraction_of_copy_bandwidth"] = out["copy_seconds"] / out["gaussian"]["seconds"]
    out |= _bf16_regeneration(tensors, device, repeats)
    out["rademacher_fraction_of_copy_bandwidth"] = out["copy_seconds"] / out["rademacher"]["seconds"]
    # a replay of 16 entries: one pass over the weights against one application per entry
    entries = [(1000 + i, (1e-4 * (-1) ** i,)) for i in range(ENTRIES_PER_PASS)]
    saved = [t.detach().clone() for t in tensors]

    def one_by_one() -> None:
        for seed, alphas in entries:
            apply_fused(tensors, seed, alphas)

    out["replay_entries"] = len(entries)
    out["replay_one_pass_seconds"] = median_seconds(partial(apply_entries_fused, tensors, entries), device, repeats)
    out["replay_one_by_one_seconds"] = median_seconds(one_by_one, device, repeats)
    out["replay_one_pass_speedup"] = out["replay_one_by_one_seconds"] / out["replay_one_pass_seconds"]
    with torch.no_grad():
        for t, s in zip(tensors, saved, strict=True):
            t.copy_(s)
        apply_entries_fused(tensors, entries)
        one_pass = [t.detach().clone() for t in tensors]
        for t, s in zip(tensors, saved, strict=True):
            t.copy_(s)
        one_by_one()
        out["replay_one_pass_bitwise_equal"] = all(torch.equal(a, b) for a, b in zip(one_pass, tensors, strict=True))
        for t, s in zip(tensors, saved, strict=True):
            t.copy_(s)
    del saved, one_pass
    fused = Perturber(params, NoiseSpec("portable", "gaussian"), fused=True).direction(7)
    chunked = Perturber(params, NoiseSpec("portable", "gaussian"), fused=False).direction(7)
    out["direction_bitwise_equal_to_chunked"] = all(torch.equal(a, b) for a, b in zip(fused, chunked, strict=True))
    del fused, chunked
    out["update_mismatches_vs_cpu"] = _update_mismatches(device)
    bad = []
    for c in json.loads(VECTORS.read_text(encoding="utf-8"))["chunks"]:
        z = torch.zeros(c["n"], dtype=torch.float32, device=device)
        apply_fused([z], c["seed"], (1.0,), gaussian=c["distribution"] == "gaussian", indices=[c["tensor"]],
                    start=c["start"])
        if "".join(struct.pack(">f", v).hex() for v in z.cpu().tolist()) != c["float32_bits"]:
            bad.append(f"{c['distribution']} seed {c['seed']} tensor {c['tensor']} start {c['start']}")
    out["known_answers_mismatches"] = bad
    return out


def _update_mismatches(device: str, n: int = 1 << 20) -> dict[str, int]:
    """Elements where one step's three alphas, applied by the fused kernel here, differ from
    the CPU Perturber's chunked ``add_`` (Gaussian, fp32 and bf16; ``n`` a multiple of 32, so
    no element falls in ``add_``'s scalar tail, which does not round a half-precision alpha:
    :mod:`fedzo.zo.cpu_lanes`): 0 means the GPU's updates are bitwise the CPU's."""
    from fedzo.zo.triton_direction import apply_fused

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        w = torch.randn(n, generator=torch.Generator().manual_seed(3)).to(dtype)
        cpu = w.clone()
        Perturber(ParamSet.from_tensors({"w": cpu}), NoiseSpec("portable", "gaussian")).apply(21, (1e-3, -2e-3, 0.51))
        gpu = w.to(device)
        apply_fused([gpu], 21, (1e-3, -2e-3, 0.51))
        out[name] = int((gpu.cpu() != cpu).sum())
    return out


def _protocol_variant(model: torch.nn.Module, perturber: Perturber, losses: list[Callable[[], torch.Tensor]],
                      joint: Callable[[], torch.Tensor], clients: int, directions: int, eps: float, lr: float,
                      rounds: int, seconds: float, device: str, together: bool) -> dict[str, Any]:
    """Rounds of (each sampled client: ``directions`` central differences from the global
    model; server: the mean scalar per direction, replayed) until ``rounds`` or ``seconds``."""
    done, t0 = 0, time.perf_counter()
    with torch.no_grad():
        while done < rounds and time.perf_counter() - t0 < seconds:
            grads = []
            for d in range(directions):
                seed = done * directions + d
                perturber.apply(seed, (eps,))
                plus = joint().view(clients, -1).mean(1) if together else torch.stack([f() for f in losses])
                perturber.apply(seed, (-2 * eps,))
                minus = joint().view(clients, -1).mean(1) if together else torch.stack([f() for f in losses])
                perturber.apply(seed, (eps,))
                grads.append(float(((plus - minus) / (2 * eps)).mean()))  # the server's mean over clients
            for d, g in enumerate(grads):  # the server's replay of the round
                perturber.apply(done * directions + d, (-lr * g / directions,))
            done += 1
        sync(device)
    elapsed = time.perf_counter() - t0
    return {"rounds": done, "seconds": elapsed, "seconds_per_round": elapsed / done,
            "extrapolated_2000_rounds_seconds_labelled_estimate": 2000 * elapsed / done, "last_scalars": grads}


def protocol_rounds(name: str, device: str, batch: int, seq: int, seconds: float, rounds: int = 300,
                    clients: int = 2, directions: int = 5) -> dict[str, Any]:
    """A DeComFL-style run, one client at a time and jointly (see the module docstring)."""
    model = build_model(name, device)
    perturber = Perturber(ParamSet.from_module(model), NoiseSpec("portable", "gaussian"), compiled=True)
    g = torch.Generator().manual_seed(1)
    vocab = int(model.config.vocab_size)  # type: ignore[union-attr,arg-type]  # a transformers config
    ids = torch.randint(0, vocab, (clients * batch, seq), generator=g).to(device)
    labels = torch.randint(0, vocab, (clients * batch,), generator=g).to(device)

    def rows(lo: int, hi: int) -> torch.Tensor:  # per-row cross-entropy of rows lo:hi
        logits = model(input_ids=ids[lo:hi], logits_to_keep=1).logits[:, -1]
        return torch.nn.functional.cross_entropy(logits.float(), labels[lo:hi], reduction="none")

    losses: list[Callable[[], torch.Tensor]] = [partial(lambda c: rows(c * batch, (c + 1) * batch).mean(), c)
                                                 for c in range(clients)]
    out: dict[str, Any] = {"model": name, "clients_per_round": clients, "of_clients": 8, "local_steps": 1,
                           "directions": directions, "batch": batch, "seq": seq}
    # warm-up (the compiled generator compiles here), lr 0: both ways from the same weights
    warm = [_protocol_variant(model, perturber, losses, lambda: rows(0, clients * batch), clients, directions,
                              1e-3, 0.0, 1, 1e9, device, together)["last_scalars"] for together in (False, True)]
    out["scalars_max_relative_difference"] = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(*warm, strict=True))
    for key, together in (("one_by_one", False), ("joint", True)):
        out[key] = _protocol_variant(model, perturber, losses, lambda: rows(0, clients * batch), clients, directions,
                                     1e-3, 1e-6, rounds, seconds, device, together)
    out["one_by_one_over_joint"] = out["one_by_one"]["seconds_per_round"] / out["joint"]["seconds_per_round"]
    return out
