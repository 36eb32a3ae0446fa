"""A synthetic binary sentiment task generated in code: deterministic, offline, learnable.

Each sentence carries one or two sentiment words from a small positive or negative list
between neutral filler; the label is the list the words come from. Every word is in the
tiny tokenizer's vocabulary, so tiny models can learn it in a few hundred steps.
"""

from __future__ import annotations

import random

from fedzo.tasks.corpora import SENTIMENT_LABELS, make_task
from fedzo.tasks.prompts import sentiment_prompts
from fedzo.tasks.types import Example, Task

__all__ = ["NEGATIVE_WORDS", "POSITIVE_WORDS", "generate_sentences", "load_synthetic_sentiment"]

POSITIVE_WORDS = ["good", "great", "excellent", "wonderful", "amazing", "superb", "brilliant", "delightful", "fun", "charming", "beautiful", "lovely", "perfect", "enjoyable", "fantastic", "awesome", "pleasant", "clever"]
NEGATIVE_WORDS = ["bad", "terrible", "awful", "horrible", "poor", "boring", "dull", "ugly", "stupid", "annoying", "weak", "disappointing", "painful", "tedious", "bland", "lame"]
_VERBS = {1: ("loved", "liked", "enjoyed"), 0: ("hated", "disliked")}
_NOUNS = ["movie", "film", "story", "plot", "acting", "cast", "script", "music", "ending", "scenes"]
_TEMPLATES = (
    "the {noun} was {adj} .",
    "the {noun} was really {adj} and {adj2} .",
    "i {verb} this {noun} , it was {adj} .",
    "a {adj} {noun} with {adj2} music .",
    "overall the {noun} is {adj} .",
    "{adj} {noun} , very {adj2} .",
)

SIZE = 1200
"""Examples generated (split 840 train / 120 dev / 240 test by the default rule)."""


def generate_sentences(n: int, *, seed: int = 0) -> list[Example]:
    """``n`` labelled sentences, balanced, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        label = i % 2
        words = POSITIVE_WORDS if label else NEGATIVE_WORDS
        template = rng.choice(_TEMPLATES)
        text = template.format(
            noun=rng.choice(_NOUNS),
            adj=rng.choice(words),
            adj2=rng.choice(words),
            verb=rng.choice(_VERBS[label]),
        )
        out.append(Example(text=text, label=label))
    rng.shuffle(out)
    return out


LARGE_SIZE = 12_000
"""Examples of ``synthetic-sentiment-large`` (10,500 train by the default split): enough for 1000-client fleets."""


def load_synthetic_sentiment(*, seed: int = 0, size: int = SIZE) -> Task:
    """The synthetic task: ``size`` sentences split train / dev / test by the default rule
    (1200 by default: 840 / 120 / 240; ``LARGE_SIZE`` for ``synthetic-sentiment-large``, whose dev and test splits are capped by the default rule)."""
    return make_task(
        "synthetic-sentiment" if size == SIZE else "synthetic-sentiment-large",
        generate_sentences(size, seed=seed),
        SENTIMENT_LABELS,
        seed=seed,
        max_length=32,
        prompts=sentiment_prompts("Review", "movie"),
        default_prompt="was",
    )
