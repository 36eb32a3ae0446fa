"""Prompt and encoder classifiers on tiny models."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fedzo.errors import ConfigError
from fedzo.models import apply_peft, load_model, trainable_names
from fedzo.tasks.classifiers import EncoderClassifier, PromptClassifier, build_classifier, last_positions
from fedzo.tasks.registry import load_task
from fedzo.tasks.types import Example, Prompt

TASK = load_task("synthetic-sentiment")
EXAMPLES = [
    Example("the movie was great", 1),
    Example("bad", 0),
    Example("a dull and boring film with weak music", 0),
]


@pytest.fixture
def llama():
    return load_model("tiny-llama")


def _hand_loss(loaded, clf: PromptClassifier, examples) -> torch.Tensor:
    """Cross-entropy over the verbalizer logits, one unpadded example at a time."""
    tok = loaded.tokenizer
    ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in clf.prompt.verbalizer]
    losses = []
    for e in examples:
        x = torch.tensor([tok(clf.prompt.render(e.text, tok))["input_ids"]])
        logits = loaded.model(input_ids=x).logits[0, -1, ids]
        losses.append(-torch.log_softmax(logits, -1)[e.label])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("prompt", ["was", "sentiment", "chat"])
def test_verbalizer_loss_equals_hand_computed_cross_entropy(llama, side, prompt):
    llama.tokenizer.padding_side = side
    clf = PromptClassifier(llama, TASK, prompt)
    batch = next(clf.batches(EXAMPLES, 8))
    assert batch.input_ids.shape[1] == max(len(clf.encode(e.text)) for e in EXAMPLES)
    with torch.no_grad():
        assert clf.loss(batch).item() == pytest.approx(_hand_loss(llama, clf, EXAMPLES).item(), abs=1e-5)
        scores = clf.logits(batch)
    assert scores.shape == (3, 2)
    assert torch.equal(clf.predict(batch), scores.argmax(-1))


def test_padded_width_is_the_width_of_the_batch_it_would_make(llama):
    """The clock prices a batch by (rows, padded width) without building it (batch_shape)."""
    from fedzo.federation.batches import batch_shape

    clf = PromptClassifier(llama, TASK, max_length=12)
    long = Example(" ".join(["a dull and boring film"] * 10), 0)
    for examples in (EXAMPLES, EXAMPLES[:1], [*EXAMPLES, long]):
        batch = next(clf.batches(examples, len(examples)))
        assert batch_shape(clf, examples) == tuple(batch.input_ids.shape)
    assert clf.padded_width([long]) == 12  # cut to max_length, as the batch is


def test_only_the_answer_position_reaches_the_head(llama):
    clf = PromptClassifier(llama, TASK)
    seen = []
    head = llama.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, a, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            clf.loss(next(clf.batches(EXAMPLES, 8)))
    finally:
        handle.remove()
    assert seen == [torch.Size([3, 1, head.out_features])]
    assert not head._forward_pre_hooks  # the selecting hook is removed again


def test_last_positions_for_both_padding_sides():
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])
    left = torch.tensor([[0, 1, 1], [0, 0, 1]])
    assert last_positions(right).tolist() == [1, 2]
    assert last_positions(left).tolist() == [2, 2]


def test_multi_token_verbalizer_is_refused(llama):
    bad = dataclasses.replace(TASK.prompt("was"), verbalizer=(" terrible", " unheardofword"))
    task = dataclasses.replace(TASK, prompts={"bad": bad}, default_prompt="bad")
    with pytest.raises(ConfigError, match=r"label word ' unheardofword' .* unknown to the tokenizer"):
        PromptClassifier(llama, task)
    lm = load_model("tiny-llama")
    two = dataclasses.replace(bad, verbalizer=(" terrible", " great movie"))
    with pytest.raises(ConfigError, match="2 tokens"):
        PromptClassifier(lm, dataclasses.replace(TASK, prompts={"two": two}), "two")


def test_unknown_prompt_lists_known_ones(llama):
    with pytest.raises(ConfigError, match="known: chat, sentiment, was"):
        PromptClassifier(llama, TASK, "nope")


def test_long_text_is_cut_but_the_answer_cue_stays(llama):
    clf = PromptClassifier(llama, TASK, "was", max_length=12)
    ids = clf.encode("great " * 50)
    assert len(ids) <= 12
    cue = llama.tokenizer("\nThe movie was", add_special_tokens=False)["input_ids"]
    assert ids[-len(cue):] == cue
    with pytest.raises(ConfigError, match="too short"):
        PromptClassifier(llama, TASK, "was", max_length=3).encode("great")


def test_shuffled_batches_are_deterministic(llama):
    clf = PromptClassifier(llama, TASK)
    a = [b.labels.tolist() for b in clf.batches(TASK.dev, 16, seed=5, shuffle=True)]
    b = [b.labels.tolist() for b in clf.batches(TASK.dev, 16, seed=5, shuffle=True)]
    c = [b.labels.tolist() for b in clf.batches(TASK.dev, 16, seed=6, shuffle=True)]
    assert a == b != c and sum(map(len, a)) == len(TASK.dev)


def test_evaluate_reports_metrics(llama):
    result = PromptClassifier(llama, TASK).evaluate(TASK.dev[:20], batch_size=8)
    assert set(result) == {"accuracy", "macro_f1", "n", "pred_counts"}
    assert result["n"] == 20 and sum(result["pred_counts"]) == 20



@pytest.mark.parametrize("model", ["tiny-llama", "tiny-bert"])
def test_evaluate_batches_by_length_and_scores_as_one_example_at_a_time(model, monkeypatch):
    """Evaluation batches are sorted by length (little padding); the metrics equal those of
    unpadded one-example batches in the given order."""
    clf = build_classifier(load_model(model), TASK)
    examples = TASK.dev[:40]
    alone = clf.evaluate(examples, batch_size=1)
    widths: list[int] = []
    predict = clf.predict
    monkeypatch.setattr(clf, "predict", lambda b: (widths.append(b.input_ids.shape[1]), predict(b))[1])
    batched = clf.evaluate(examples, batch_size=8)
    assert widths == sorted(widths) and len(widths) == 5
    assert batched == alone

def test_encoder_classifier_head_is_a_trainable_parameter():
    loaded = load_model("tiny-bert")
    clf = build_classifier(loaded, TASK)
    assert isinstance(clf, EncoderClassifier)
    names = trainable_names(clf)
    assert "head.weight" in names and "head.bias" in names
    assert any(n.startswith("model.") for n in names)
    batch = next(clf.batches(EXAMPLES, 8))
    with torch.no_grad():
        states = loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        m = batch.attention_mask.unsqueeze(-1).float()
        expected = F.cross_entropy(clf.head((states * m).sum(1) / m.sum(1)), batch.labels)
        assert clf.loss(batch).item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ConfigError, match="encoder"):
        build_classifier(loaded, TASK, prompt="was")


@pytest.mark.parametrize("mode", ["lora", "prefix", "prompt"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_peft_wrapped_models_classify_and_expose_the_trainable_set(name, mode):
    loaded = load_model(name)
    loaded.model = apply_peft(loaded.model, mode)
    clf = build_classifier(loaded, TASK)
    batch = next(clf.batches(EXAMPLES, 8))
    loss = clf.loss(batch)
    loss.backward()
    trained = [(n, p) for n, p in clf.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained)
    assert any(p.grad.abs().sum() > 0 for _, p in trained)  # (LoRA A has zero grad at B = 0)
    assert any(not p.requires_grad for p in clf.parameters())


def test_tiny_llama_learns_the_synthetic_task_with_backprop():
    loaded = load_model("tiny-llama")
    clf = PromptClassifier(loaded, TASK)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for batch in clf.batches(TASK.train[:320], 16, shuffle=True):
        opt.zero_grad()
        clf.loss(batch).backward()
        opt.step()
    assert clf.evaluate(TASK.test, batch_size=64)["accuracy"] > 0.9


def test_custom_prompt_object_renders_text():
    p = Prompt(name="p", template="Q: {text} A:", verbalizer=(" no", " yes"))
    assert p.render("{braces} stay") == "Q: {braces} stay A:"


@pytest.mark.parametrize("kind", ["prompt", "encoder"])
def test_prefetch_encodes_as_one_at_a_time(kind):
    """Encoding many texts in one call gives each text's own encoding (an over-long one cut
    as alone); batches built afterwards are the same."""
    loaded = load_model("tiny-llama" if kind == "prompt" else "tiny-bert")
    make = (lambda: PromptClassifier(loaded, TASK, "was", max_length=12)) if kind == "prompt" else \
        (lambda: EncoderClassifier(loaded, TASK, max_length=12))
    examples = [*EXAMPLES, Example("great " * 50, 1), EXAMPLES[0]]
    alone, many = make(), make()
    many.prefetch(examples)
    assert many._cache == {e.text: alone.encode(e.text) for e in examples}
    a, b = next(iter(alone.batches(examples, 5))), next(iter(many.batches(examples, 5)))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
