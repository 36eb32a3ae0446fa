"""Stacked copies (fedzo/federation/transports/batched/stacked.py): whole clients per joint
pass, every trained layer (full weights, LoRA adapters) applying all clients' copies in one
batched call."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedzo.federation.transports.batched.fullrows import trained_layers
from fedzo.federation.transports.batched.stacked import (
    Slot,
    handler,
    pack_clients,
    slot_state,
    stack_states,
    stacked_layers,
)
from fedzo.tasks.batching import Batch
from fedzo.zo import ParamSet


def test_stacked_states_are_copies_and_slots_are_views() -> None:
    a, b = torch.arange(6.0).view(2, 3), torch.tensor([1.0, 2.0])
    stacks = stack_states([a, b], 3)
    assert [s.shape for s in stacks] == [(3, 2, 3), (3, 2)]
    assert all(torch.equal(s[j], t) for s, t in zip(stacks, (a, b), strict=True) for j in range(3))
    own = slot_state(Slot(stacks, 1))
    own[0].add_(1.0)  # a client's step moves its slice only, and not the model's tensor
    assert torch.equal(stacks[0][1], a + 1) and torch.equal(stacks[0][0], a) and torch.equal(stacks[0][2], a)
    assert torch.equal(a, torch.arange(6.0).view(2, 3))


def test_pack_clients_keeps_whole_clients_under_the_caps() -> None:
    inf = float("inf")
    assert pack_clients([8, 8, 8], [10, 10, 10], [0, 1, 2], 256, 0.25, inf) == [[0, 1, 2]]
    assert pack_clients([8, 8, 8], [10, 10, 10], [0, 1, 2], 16, 0.25, inf) == [[0, 1], [2]]  # max_rows
    assert pack_clients([8, 8, 8], [10, 10, 10], [0, 1, 2], 256, 0.25, 200) == [[0, 1], [2]]  # tokens
    assert pack_clients([8, 4, 4], [10, 10, 10], [0, 1, 2], 256, 0.25, inf) == [[0], [1, 2]]  # equal rows only
    assert pack_clients([8, 8, 8], [10, 10, 10], [0, 2, 3], 256, 0.25, inf) == [[0], [1, 2]]  # consecutive slots
    # padding: a client of width 20 beside one of width 10 pads 8 x 10 tokens more than their own 240
    assert pack_clients([8, 8], [10, 20], [0, 1], 256, 0.25, inf) == [[0], [1]]
    assert pack_clients([8, 8], [10, 20], [0, 1], 256, 0.5, inf) == [[0, 1]]
    assert pack_clients([64], [512], [0], 8, 0.0, 1.0) == [[0]]  # one client always makes a pass


@pytest.mark.parametrize("peft", ["full", "lora"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert"])
def test_stacked_layers_score_each_client_with_its_own_weights(fed_config: Any, model: str, peft: str) -> None:
    """Three clients of two rows each, each with its own perturbed copy of every trained
    tensor: a stacked pass gives each client's rows the scores of its own forward (full
    weights of tiny-llama: tied embeddings, RMS norms; of tiny-bert: layer norms, position ids
    broadcast over the batch, which run block by block; LoRA: the adapters' linears, and
    tiny-bert's trained head), and the model's own tensors are untouched."""
    from fedzo.tasks.objective import build_objective

    sc = fed_config()
    obj = build_objective(sc.model.model_copy(update={"name": model, "peft": peft}), sc.data, sc.runtime, 0)
    clf, work = obj.classifier, ParamSet.from_module(obj.classifier)
    clients, rows = 3, 2
    torch.manual_seed(0)
    stacks = stack_states(work.tensors, clients)
    for s in stacks:
        s.add_(0.05 * torch.randn_like(s))
    kinds = {type(layer).__name__: handler(layer, own) is not None for layer, own in trained_layers(clf, work)}
    if model == "tiny-llama" or peft == "lora":  # every trained layer runs all clients in one call
        assert kinds and all(kinds.values()), kinds
    else:
        assert kinds["Linear"] and kinds["LayerNorm"] and kinds["Embedding"], kinds
    examples = obj.train[: clients * rows]
    batch = next(iter(clf.batches(examples, len(examples))))
    original = [t.clone() for t in work.tensors]
    with torch.no_grad():
        with stacked_layers(clf, work, stacks, rows), clf.eager():
            joint = clf.logits(batch)
        own = []
        for j in range(clients):
            for t, s in zip(work.tensors, stacks, strict=True):
                t.copy_(s[j])
            lo, hi = j * rows, (j + 1) * rows
            own.append(clf.logits(Batch(batch.input_ids[lo:hi], batch.attention_mask[lo:hi], batch.labels[lo:hi])))
        for t, x in zip(work.tensors, original, strict=True):
            t.copy_(x)
        plain = clf.logits(batch)
    torch.testing.assert_close(joint, torch.cat(own), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(joint, plain)  # the clients' weights were used, not the model's
    assert all(torch.equal(t, x) for t, x in zip(work.tensors, original, strict=True))
