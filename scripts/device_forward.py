"""The GPU check's compiled-forward check (scripts/device_check.py): the ZO step and two
forward passes with each ``runtime.forward`` mode (:mod:`fedzo.tasks.forward`).

``compiled_forward``: on SmolLM2-135M built from its config, one batch of fixed random tokens
(``batch`` x ``seq``, attention mask of ones, the last position's logits), scored by the very
:class:`~fedzo.tasks.forward.CompiledForward` a classifier uses (bucketed shapes, CUDA graphs
under ``graphs`` on CUDA), per mode: the seconds of two forwards, of one ZO step (central
estimator, q = 1, portable Gaussian, the Perturber's default path: the fused kernel on CUDA),
their ratio, the first calls' seconds apart (compilation and CUDA-graph recording, not in the
timings), and the loss's distance from eager's. Imports torch, transformers and ``fedzo.zo``
/ ``fedzo.tasks.forward`` only, as the other checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from device_common import build_model, median_seconds, sync

from fedzo.tasks.forward import FORWARD_MODES, CompiledForward
from fedzo.zo import EstimatorConfig, NoiseSpec, ParamSet, Perturber, make_zo_optimizer, zo_step

WARM_CALLS = 3  # CUDA graphs: a warm-up run, the recording, then replays


def _loss(model: torch.nn.Module, mode: str, ids: torch.Tensor, labels: torch.Tensor) -> tuple[
        Callable[[], torch.Tensor], CompiledForward | None]:
    """The loss of the batch under ``mode``'s forward (and its compiled forward, if any)."""
    mask = torch.ones_like(ids)

    def scores(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1).logits[:, -1]

    compiled = None if mode == "eager" else CompiledForward(scores, mode, pad_id=0,  # type: ignore[arg-type]
                                                             max_width=ids.shape[1])
    forward = scores if compiled is None else compiled

    def loss() -> torch.Tensor:
        return torch.nn.functional.cross_entropy(forward(ids, mask).float(), labels)

    return loss, compiled


def compiled_forward(name: str, device: str, batch: int, seq: int, repeats: int,
                     modes: Sequence[str] = ("eager", "graphs")) -> dict[str, Any]:
    """Two forwards and one ZO step per forward mode, their ratio, and the first calls apart."""
    unknown = sorted(set(modes) - set(FORWARD_MODES))
    if unknown:
        raise ValueError(f"forward modes {unknown} not known; allowed: {', '.join(FORWARD_MODES)}")
    model = build_model(name, device)
    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)  # type: ignore[union-attr,arg-type]  # a transformers config
    ids = torch.randint(0, vocab, (batch, seq), generator=g).to(device)
    labels = torch.randint(0, vocab, (batch,), generator=g).to(device)
    perturber = Perturber(ParamSet.from_module(model), NoiseSpec("portable", "gaussian"))
    est, opt = EstimatorConfig("central", 1e-3, 1), make_zo_optimizer("zo-sgd")
    out: dict[str, Any] = {"model": name, "batch": batch, "seq": seq, "modes": list(modes)}
    with torch.no_grad():
        losses = {}
        for mode in modes:  # every mode's first calls before any step moves the weights
            loss, compiled = losses[mode] = _loss(model, mode, ids, labels)
            t0 = time.perf_counter()
            first = [float(loss()) for _ in range(WARM_CALLS)]
            sync(device)
            out[mode] = {"first_calls_seconds": time.perf_counter() - t0, "first_calls": WARM_CALLS,
                         "loss": first[-1], "shapes": sorted(compiled.shapes) if compiled else []}
        for mode, (loss, _) in losses.items():

            def forwards(loss: Callable[[], torch.Tensor] = loss) -> None:
                loss()
                loss()

            def step(loss: Callable[[], torch.Tensor] = loss) -> None:
                zo_step(perturber, lambda: float(loss()), 0, est, opt, 0.0)

            two = median_seconds(forwards, device, repeats)
            seconds = median_seconds(step, device, repeats)
            out[mode] |= {"two_forwards_seconds": two, "step_seconds": seconds, "ratio_to_two_forwards": seconds / two,
                          "loss_abs_difference_to_first_mode": abs(out[mode]["loss"] - out[modes[0]]["loss"])}
    return out


def best_mode(check: dict[str, Any]) -> str | None:
    """The mode with the fastest two forwards (the forwards as fast as they can be made)."""
    timed = [m for m in check.get("modes", []) if isinstance(check.get(m), dict)]
    return min(timed, key=lambda m: check[m]["two_forwards_seconds"]) if timed else None
