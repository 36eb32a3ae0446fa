"""`load_task(name)`: the shipped tasks by name, or a user dataset (hub id or local path)."""

from __future__ import annotations

import os
from collections.abc import Callable

from fedzo.tasks.corpora import SENTIMENT_CORPORA, load_bbc_news, load_sentiment_corpus
from fedzo.tasks.hf import load_hf_task
from fedzo.tasks.synthetic import LARGE_SIZE, load_synthetic_sentiment
from fedzo.tasks.types import Task

__all__ = ["TASK_NAMES", "load_task"]

_Loader = Callable[[int, "str | os.PathLike[str] | None"], Task]


def _sentiment_loader(name: str) -> _Loader:
    """The loader of one embedded sentiment corpus."""

    def load(seed: int, cache: str | os.PathLike[str] | None) -> Task:
        return load_sentiment_corpus(name, seed=seed, cache_dir=cache)

    return load


_LOADERS: dict[str, _Loader] = {
    **{name: _sentiment_loader(name) for name in SENTIMENT_CORPORA},
    "bbc-news": lambda seed, cache: load_bbc_news(seed=seed, cache_dir=cache),
    "synthetic-sentiment": lambda seed, cache: load_synthetic_sentiment(seed=seed),
    "synthetic-sentiment-large": lambda seed, cache: load_synthetic_sentiment(seed=seed, size=LARGE_SIZE),
}

TASK_NAMES: tuple[str, ...] = tuple(_LOADERS)
"""Tasks available without hub access."""


def load_task(
    name: str,
    *,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> Task:
    """A task by name (:data:`TASK_NAMES`), ``hf:<dataset>[:<config>]`` or a local path.

    ``seed`` fixes the train/dev/test split (and the synthetic data). Embedded corpora are
    fetched into the cache on first use. ``text_column`` / ``label_column`` apply to
    user datasets only.
    """
    loader = _LOADERS.get(name)
    if loader is not None:
        return loader(seed, cache_dir)
    return load_hf_task(name, seed=seed, text_column=text_column, label_column=label_column)
