"""The work of one training step, counted from what the step actually computes.

A step is priced from its batches' real shapes (rows x the batch's padded width, plus
any virtual tokens), not from ``max_length``:

* matmul FLOPs of every transformer layer (2 x in x out per token and linear layer),
  without the embedding lookups (a gather, no multiply-adds);
* attention scores and weighted sums (4 x width x width x q-dim per layer and row);
* the LM head only for the positions scored (one per row: the answer position), or an
  encoder's pooler and classification head;
* for backprop: the backward the trained parameters need. Gradients with respect to the
  activations flow from the loss down to the lowest trained parameter (all the way for
  LoRA, prefix and prompt tuning, whose parameters sit in or before the first layer),
  and weight gradients only for trained matrices; activation checkpointing recomputes
  the forward once more; plus the optimizer's update of the trained elements;
* for ZO: the forward passes of the step and the regenerations of the directions over
  the trained elements (counted separately: they cost time per element, not FLOPs);
* for forward gradients (ZO's ``forward-grad`` estimator): each forward with tangents is
  the forward plus its tangent, which every matmul after the first trained parameter
  computes once more (all of them: LoRA, prefix and prompt parameters sit in or before
  the first layer) and a trained matmul twice (``dx W + x dW``). Such steps are priced
  with their own calibration group (method ``fg``): the seconds per FLOP of a tangent
  forward are not those of a plain one.

:mod:`fedzo.devices.calibration` turns these counts into seconds on the reference host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fedzo.devices.dims import ArchDims

Method = Literal["zo", "bp"]
Peft = Literal["full", "lora", "prefix", "prompt"]
ADAM_FLOPS_PER_ELEMENT = 12.0  # two moment updates, bias corrections, sqrt, divide, step
SGD_FLOPS_PER_ELEMENT = 2.0
Optimizer = Literal["sgd", "momentum", "adam"]
UPDATE_FLOPS_PER_ELEMENT: dict[str, float] = {"sgd": SGD_FLOPS_PER_ELEMENT, "momentum": SGD_FLOPS_PER_ELEMENT,
                                              "adam": ADAM_FLOPS_PER_ELEMENT}


@dataclass(frozen=True)
class Tuning:
    """What is trained and how: the part of a run's configuration that shapes a step."""

    method: Method
    peft: Peft = "full"
    lora_rank: int = 8
    virtual_tokens: int = 10
    forwards_per_step: int = 2  # ZO: q x the estimator's forwards per direction
    regenerations_per_step: int = 3  # ZO: 3 per direction (central: +eps, -2eps, restore+update)
    tangent_forwards_per_step: int = 0  # ZO forward-grad: forwards that carry a tangent
    optimizer: Optimizer = "sgd"
    checkpointing: bool = False
    mask: str = "none"  # ZO sparse mask (memory: magnitude holds 1 bit per trainable parameter)
    server_state_copies: int = 0  # dense copies of the trainable set a client keeps for the server optimizer

    @property
    def calibration_method(self) -> Literal["zo", "bp", "fg"]:
        """The calibration group's method: ``fg`` for forward-gradient ZO steps."""
        return "fg" if self.method == "zo" and self.tangent_forwards_per_step else self.method

    @classmethod
    def of(cls, method: Literal["zo", "bp", "fg"], peft: Peft = "full", *, checkpointing: bool = False,
           optimizer: Optimizer = "sgd") -> Tuning:
        """The one-direction step a calibration group's method names (``fg``: forward-gradient ZO)."""
        if method == "fg":
            return cls("zo", peft, forwards_per_step=0, regenerations_per_step=2, tangent_forwards_per_step=1,
                       optimizer=optimizer)
        return cls(method, peft, optimizer=optimizer, checkpointing=checkpointing and method == "bp")


@dataclass(frozen=True)
class StepWork:
    """What one step computes: FLOPs, regenerated direction elements and, for backprop, the
    elements its optimizer updates (counted in ``flops`` too, at ``UPDATE_FLOPS_PER_ELEMENT``
    of ``optimizer``; a calibration that measured the update prices it per element instead)."""

    flops: float
    regen_elements: float
    update_elements: float = 0.0
    optimizer: Optimizer = "sgd"

    def __add__(self, other: StepWork) -> StepWork:
        if self.update_elements and other.update_elements and self.optimizer != other.optimizer:
            raise ValueError(f"cannot add the work of {self.optimizer} and {other.optimizer} steps")
        optimizer = self.optimizer if self.update_elements else other.optimizer
        return StepWork(self.flops + other.flops, self.regen_elements + other.regen_elements,
                        self.update_elements + other.update_elements, optimizer)


def _layer_matmul_flops(d: ArchDims, tokens: float, lora_rank: int) -> float:
    """Multiply-adds x 2 of one layer's linear maps for ``tokens`` tokens."""
    h, i = d.hidden, d.intermediate
    attn = h * d.q_dim + 2 * h * d.kv_dim + d.q_dim * h  # q, k, v, o
    mlp = 3 * h * i if d.kind == "decoder" else 2 * h * i  # gate, up, down | up, down
    lora = 2 * lora_rank * (h + d.q_dim) if lora_rank else 0  # adapters on q and v
    return 2.0 * tokens * (attn + mlp + lora)


def forward_flops(d: ArchDims, rows: int, width: int, *, extra_tokens: int = 0, extra_keys: int = 0,
                  lora_rank: int = 0) -> float:
    """FLOPs of one forward of ``rows`` x ``width`` tokens (no embedding lookups).

    ``extra_tokens`` are prompt-tuning virtual tokens (they go through every layer);
    ``extra_keys`` are prefix-tuning keys (attended to, not computed).
    """
    t = width + extra_tokens
    keys = t + extra_keys
    per_layer = _layer_matmul_flops(d, rows * t, lora_rank) + 4.0 * rows * t * keys * d.q_dim
    head = 2.0 * rows * d.hidden * (d.vocab if d.kind == "decoder" else d.hidden + d.num_labels)
    return d.layers * per_layer + head


def _trained_matmul_fraction(d: ArchDims, tuning: Tuning) -> float:
    """Share of the forward matmul FLOPs whose weights get gradients."""
    return 1.0 if tuning.peft == "full" else 0.0


def step_work(d: ArchDims, batches: Sequence[tuple[int, int]], tuning: Tuning, trainable: int) -> StepWork:
    """The work of one step over each of ``batches`` ((rows, width) per batch).

    ZO: ``forwards_per_step`` forwards of each batch (and ``tangent_forwards_per_step``
    forwards with tangents) and ``regenerations_per_step`` passes over the ``trainable``
    elements. BP: a forward, the backward the tuning needs,
    a recomputed forward when checkpointing, and the optimizer update.
    """
    extra_tokens = tuning.virtual_tokens if tuning.peft == "prompt" else 0
    extra_keys = tuning.virtual_tokens if tuning.peft == "prefix" else 0
    rank = tuning.lora_rank if tuning.peft == "lora" else 0
    total = StepWork(0.0, 0.0)
    for rows, width in batches:
        fwd = forward_flops(d, rows, width, extra_tokens=extra_tokens, extra_keys=extra_keys, lora_rank=rank)
        if tuning.method == "zo":
            tangent = tuning.tangent_forwards_per_step * fwd * (2.0 + _trained_matmul_fraction(d, tuning))
            total += StepWork(tuning.forwards_per_step * fwd + tangent,
                              float(tuning.regenerations_per_step * trainable))
            continue
        # backward: activation gradients through every layer (1x), weight gradients of the
        # trained matmuls (their share of 1x); checkpointing recomputes the forward (1x)
        backward = fwd * (1.0 + _trained_matmul_fraction(d, tuning))
        recompute = fwd if tuning.checkpointing else 0.0
        update = trainable * UPDATE_FLOPS_PER_ELEMENT[tuning.optimizer]
        total += StepWork(fwd + backward + recompute + update, 0.0, float(trainable), tuning.optimizer)
    return total
