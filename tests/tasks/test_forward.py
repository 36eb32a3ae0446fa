"""The compiled forward (runtime.forward) and its shape buckets, on the tiny models.

Tolerances: a row's class scores from a batch of another shape, or from compiled code,
differ from eager's by float32 rounding only (other reduction orders and kernels):
observed up to 3e-7 on scores of size 1; the tests allow 1e-5."""

from __future__ import annotations

import pytest
import torch
from torch.func import jvp

from fedzo.models import apply_peft, load_model
from fedzo.tasks.classifiers import Classifier, EncoderClassifier, PromptClassifier
from fedzo.tasks.forward import WIDTH_FLOOR, bucket, bucket_shape, compiled_shapes, pad_to, takes_compiled
from fedzo.tasks.registry import load_task
from fedzo.tasks.types import Example
from fedzo.zo import NoiseSpec, ParamSet, Perturber

TOL = 1e-5
TASK = load_task("synthetic-sentiment")
EXAMPLES = [
    Example("the movie was great", 1),
    Example("bad", 0),
    Example("a dull and boring film with weak music", 0),
]


def test_buckets_are_few_and_cost_at_most_half_again() -> None:
    assert [bucket(n, WIDTH_FLOOR) for n in (1, 16, 17, 24, 25, 33, 48, 49, 64, 65, 97)] == \
        [16, 16, 24, 24, 32, 48, 48, 64, 64, 96, 128]
    assert [bucket(n) for n in range(1, 18)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16, 16, 16, 16, 24]
    for n in range(1, 600):
        assert n <= bucket(n) <= 1.5 * n and bucket(bucket(n)) == bucket(n)
    assert len({bucket(n, WIDTH_FLOOR) for n in range(1, 129)}) == 7  # 16 .. 128 tokens: seven widths
    assert bucket_shape(5, 40, max_width=42) == (6, 42)  # never wider than the token limit
    assert bucket_shape(5, 50, max_width=42) == (6, 50)  # unless the batch already is


def _classifier(kind: str, side: str) -> Classifier:
    if kind == "encoder":
        loaded = load_model("tiny-bert")
        loaded.tokenizer.padding_side = side
        return EncoderClassifier(loaded, TASK).eval()
    loaded = load_model("tiny-llama")
    loaded.model = apply_peft(loaded.model, kind, r=4, num_virtual_tokens=3)
    loaded.tokenizer.padding_side = side
    return PromptClassifier(loaded, TASK).eval()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("kind", ["full", "prompt", "prefix", "encoder"])
def test_a_bucketed_batch_scores_each_row_as_the_batch_itself(kind: str, side: str) -> None:
    """Columns on the right and rows at the bottom: every real row's scores are its own, to
    rounding, whatever side the tokenizer pads on (prompt tuning's positions included)."""
    clf = _classifier(kind, side)
    batch = next(clf.batches(EXAMPLES, 8))
    pad_id = int(clf.tokenizer.pad_token_id)
    with torch.no_grad(), clf._scoring():
        plain = clf.scores(batch.input_ids, batch.attention_mask)
        for rows, width in ((3, 16), (4, 24), (6, 48)):
            ids, mask = pad_to(batch.input_ids, batch.attention_mask, rows, width, pad_id)
            assert ids.shape == (rows, width)
            padded = clf.scores(ids, mask)
            assert torch.isfinite(padded).all()  # the added rows too
            torch.testing.assert_close(padded[:3], plain, rtol=0, atol=TOL)


def test_only_calls_without_autograd_or_transforms_take_the_compiled_path() -> None:
    with torch.no_grad():
        assert takes_compiled()
        seen: list[bool] = []

        def f(x: torch.Tensor) -> torch.Tensor:
            seen.append(takes_compiled())
            return x * 2

        jvp(f, (torch.ones(2),), (torch.ones(2),))
        assert seen == [False]
    with torch.enable_grad():
        assert not takes_compiled()


def test_the_compiled_forward_follows_in_place_moves_as_eager_does() -> None:
    """One compile (tiny Llama, one shape): the compiled scores equal eager's to rounding,
    before and after the ZO step's in-place moves of the weights; calls with autograd, or
    under ``eager()``, run eager bitwise; the bucketed shapes are counted."""
    clf = _classifier("full", "left")
    batch = next(clf.batches(EXAMPLES, 8))
    perturber = Perturber(ParamSet.from_module(clf), NoiseSpec("portable", "gaussian"))
    before = compiled_shapes() or 0
    with torch.no_grad():
        eager = clf.logits(batch)
        clf.use_forward("compiled")
        assert clf.compiled is not None
        torch.testing.assert_close(clf.logits(batch), eager, rtol=0, atol=TOL)
        losses = []
        for alpha in (1e-2, -2e-2, 1e-2):  # +eps, -eps, back: as the central estimator moves
            perturber.apply(7, (alpha,))
            compiled_loss = float(clf.loss(batch))
            with clf.eager():
                eager_loss = float(clf.loss(batch))
            losses.append((compiled_loss, eager_loss))
        assert clf.compiled.shapes == {(3, 16)}  # 13 tokens -> 16, three rows
    for compiled_loss, eager_loss in losses:
        assert compiled_loss == pytest.approx(eager_loss, abs=TOL)
    (plus, _), (minus, _) = losses[0], losses[1]
    assert abs(plus - minus) > 100 * TOL  # the moves changed the loss the compiled code saw
    assert compiled_shapes() == before + 1
    scores = clf.logits(batch)  # autograd records: eager, although compiled is chosen
    assert scores.requires_grad
    with torch.no_grad(), clf.eager():
        assert torch.equal(scores.detach(), clf.logits(batch))
