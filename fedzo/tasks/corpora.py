"""Embedded corpora read from cached registry archives (see :mod:`fedzo.assets`).

Sentiment snippets (Hutto & Gilbert 2014, from the vaderSentiment source archive): lines
``id<TAB>score<TAB>text`` (UTF-8, CRLF); label 1 if the mean human score is > 0, 0 if
< 0, and score-0 lines dropped. BBC News: one article per file under ``<topic>/`` (label
``sport`` is read from the folder ``sports/``).
Splits are stratified and fixed by seed: test min(1000, n/5), dev min(500, n/10), the
rest train (Rotten Tomatoes: 1000 / 500 / 9068).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fedzo import assets
from fedzo.errors import AssetError
from fedzo.tasks.prompts import sentiment_prompts, topic_prompts
from fedzo.tasks.splits import default_sizes, stratified_split
from fedzo.tasks.types import Example, Prompt, Task

__all__ = ["SENTIMENT_CORPORA", "load_bbc_news", "load_sentiment_corpus", "make_task", "read_ground_truth"]

SENTIMENT_LABELS = ("negative", "positive")

# task name -> (file in the vader-corpora asset, text kind, subject noun)
SENTIMENT_CORPORA: dict[str, tuple[str, str, str]] = {
    "rotten-tomatoes": ("movieReviewSnippets_GroundTruth.txt", "Review", "movie"),
    "tweets": ("tweets_GroundTruth.txt", "Tweet", "tweet"),
    "amazon-reviews": ("amazonReviewSnippets_GroundTruth.txt", "Review", "product"),
}

BBC_TOPICS = ("business", "entertainment", "politics", "sport", "tech")
_BBC_FOLDERS = ("business", "entertainment", "politics", "sports", "tech")


def read_ground_truth(path: Path) -> list[Example]:
    """Parse an ``id<TAB>score<TAB>text`` file; drop neutral (score 0) lines."""
    out = []
    with open(path, encoding="utf-8", newline=None) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t", 2)
            try:
                score = float(parts[1])
            except (IndexError, ValueError):
                raise AssetError(f"{path}:{lineno}: expected 'id<TAB>score<TAB>text', got {line[:60]!r}") from None
            if score != 0 and len(parts) == 3 and parts[2].strip():
                out.append(Example(text=parts[2].strip(), label=int(score > 0)))
    return out


def make_task(
    name: str,
    examples: Sequence[Example],
    label_names: tuple[str, ...],
    *,
    seed: int,
    max_length: int,
    prompts: dict[str, Prompt],
    default_prompt: str | None,
    sizes: tuple[int, int] | None = None,
) -> Task:
    """Split ``examples`` (stratified, by ``seed``) into a :class:`Task`."""
    n_test, n_dev = sizes or default_sizes(len(examples))
    train, dev, test = stratified_split([e.label for e in examples], n_test, n_dev, seed=seed)
    pick = lambda idx: tuple(examples[i] for i in idx)
    return Task(
        name=name,
        label_names=label_names,
        train=pick(train),
        dev=pick(dev),
        test=pick(test),
        max_length=max_length,
        prompts=prompts,
        default_prompt=default_prompt,
    )


def load_sentiment_corpus(
    name: str, *, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None
) -> Task:
    """One of :data:`SENTIMENT_CORPORA` as a binary task (default prompt: ``chat``)."""
    filename, kind, noun = SENTIMENT_CORPORA[name]
    folder = assets.ensure("vader-corpora", cache_dir=cache_dir)
    examples = read_ground_truth(folder / filename)
    return make_task(
        name,
        examples,
        SENTIMENT_LABELS,
        seed=seed,
        max_length=128,
        prompts=sentiment_prompts(kind, noun),
        default_prompt="chat",
    )


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def load_bbc_news(*, seed: int = 0, cache_dir: str | os.PathLike[str] | None = None) -> Task:
    """BBC News topic classification (5 classes, articles truncated to 256 tokens)."""
    folder = assets.ensure("bbc-news", cache_dir=cache_dir)
    examples = []
    for label, topic_dir in enumerate(_BBC_FOLDERS):
        for path in sorted((folder / topic_dir).glob("*.txt")):
            text = " ".join(_read_text(path).split())
            if text:
                examples.append(Example(text=text, label=label))
    if not examples:
        raise AssetError(f"no articles under {folder}; re-fetch with `fedzo assets fetch bbc-news`")
    return make_task(
        "bbc-news",
        examples,
        BBC_TOPICS,
        seed=seed,
        max_length=256,
        prompts=topic_prompts(BBC_TOPICS),
        default_prompt="chat",
    )
