"""`load_task(name)`: the shipped tasks by name, or a user dataset (hub id or local path)."""

from __future__ import annotations

import os
from collections.abc import Callable

from fedzo.errors import ConfigError
from fedzo.tasks.corpora import SENTIMENT_CORPORA, load_bbc_news, load_sentiment_corpus
from fedzo.tasks.synthetic import LARGE_SIZE, load_synthetic_sentiment
from fedzo.tasks.types import Task
from fedzo.tasks.user import TaskOptions, load_user_task

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
    options: TaskOptions | None = None,
) -> Task:
    """A task by name (:data:`TASK_NAMES`), ``hf:<dataset>[:<config>]``, a data file or a folder.

    ``seed`` fixes the train/dev/test split (and the synthetic data). Embedded corpora are
    fetched into the cache on first use. ``options`` (columns, labels, verbalizer, template,
    split sizes) apply to user datasets; a shipped task refuses them.
    """
    loader = _LOADERS.get(name)
    if loader is not None:
        if options is not None and options != TaskOptions():
            raise ConfigError(f"data.task: {name!r} is a shipped task; its columns, labels and prompts are fixed "
                              "(the text_column, label_column, label_names, verbalizer, template and split-size "
                              "options are for your own data)")
        return loader(seed, cache_dir)
    return load_user_task(name, seed=seed, options=options)
