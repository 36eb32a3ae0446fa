"""The synthetic sentiment task: deterministic, balanced, in the tiny vocabulary."""

from __future__ import annotations

from fedzo.models.tiny import TINY_VOCAB, build_tiny_tokenizer
from fedzo.tasks.registry import load_task
from fedzo.tasks.synthetic import generate_sentences


def test_same_seed_same_data_other_seed_other_data():
    assert load_task("synthetic-sentiment", seed=4).train == load_task("synthetic-sentiment", seed=4).train
    assert generate_sentences(50, seed=1) != generate_sentences(50, seed=2)


def test_sizes_and_balance():
    task = load_task("synthetic-sentiment")
    assert (len(task.train), len(task.dev), len(task.test)) == (840, 120, 240)
    assert sum(e.label for e in task.test) == 120


def test_every_word_is_in_the_tiny_vocabulary():
    tok = build_tiny_tokenizer()
    task = load_task("synthetic-sentiment")
    words = {w for e in task.train + task.test for w in e.text.split()}
    assert words <= set(TINY_VOCAB)
    assert all(tok.unk_token_id not in tok(e.text)["input_ids"] for e in task.test)


def test_large_synthetic_task_has_room_for_a_thousand_clients() -> None:
    from fedzo.tasks.registry import load_task

    task = load_task("synthetic-sentiment-large")
    assert task.name == "synthetic-sentiment-large"
    assert len(task.train) == 10500 and len(task.dev) == 500 and len(task.test) == 1000
