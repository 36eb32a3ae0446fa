"""Tasks from Hugging Face ``datasets``: ``hf:<dataset>[:<config>]`` or a ``save_to_disk`` dir.

Text and label columns are taken from the arguments or detected (a ``ClassLabel`` or a
column named like ``label``; the only string column or one named like ``text``). Splits
``train`` / ``validation`` (or ``dev``) / ``test`` are used where present and labelled;
missing ones are carved from train (stratified, by seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedzo.errors import ConfigError
from fedzo.tasks.prompts import generic_prompts
from fedzo.tasks.splits import default_sizes, stratified_split
from fedzo.tasks.types import Example, Task

__all__ = ["detect_columns", "load_hf_task"]

_TEXT_NAMES = ("text", "sentence", "content", "review", "document", "comment", "tweet")
_LABEL_NAMES = ("label", "labels", "class", "target", "category")
_DEV_NAMES = ("validation", "dev", "valid")


def detect_columns(features: Any, text_column: str | None, label_column: str | None) -> tuple[str, str]:
    """The (text, label) column names of a dataset with these ``features``."""
    from datasets import ClassLabel, Value

    columns = list(features)
    for given, what in ((text_column, "text_column"), (label_column, "label_column")):
        if given is not None and given not in columns:
            raise ConfigError(f"{what} {given!r} is not a column; columns: {', '.join(columns)}")
    if label_column is None:
        class_labels = [c for c in columns if isinstance(features[c], ClassLabel)]
        named = [c for c in columns if c.lower() in _LABEL_NAMES]
        found = class_labels or named
        if len(found) != 1:
            raise ConfigError(
                f"cannot tell the label column among {', '.join(columns)}; "
                "pass label_column= (CLI: --label-column)"
            )
        label_column = found[0]
    if text_column is None:
        strings = [
            c for c in columns
            if c != label_column and isinstance(features[c], Value) and features[c].dtype in ("string", "large_string")
        ]
        named = [c for c in strings if c.lower() in _TEXT_NAMES]
        found = named if len(named) == 1 else strings
        if len(found) != 1:
            raise ConfigError(
                f"cannot tell the text column among {', '.join(columns)}; "
                "pass text_column= (CLI: --text-column)"
            )
        text_column = found[0]
    return text_column, label_column


def _open(source: str) -> Any:
    import datasets

    if source.startswith("hf:"):
        spec = source[3:]
        name, _, config = spec.partition(":")
        try:
            return datasets.load_dataset(name, config or None)
        except Exception as exc:  # datasets raises many types for missing/offline hubs
            raise ConfigError(
                f"task {source!r}: cannot load dataset {name!r}"
                f"{f' config {config!r}' if config else ''} ({type(exc).__name__}: {exc}); "
                "hub datasets need network access and HF_DATASETS_OFFLINE=0"
            ) from exc
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"task {source!r} is neither a known task, an 'hf:' dataset nor an existing path")
    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:
        raise ConfigError(f"task {source!r}: not a folder written by datasets' save_to_disk ({exc})") from exc


def load_hf_task(
    source: str,
    *,
    seed: int = 0,
    text_column: str | None = None,
    label_column: str | None = None,
    max_length: int = 256,
) -> Task:
    """A :class:`Task` from a hub dataset (``hf:name[:config]``) or a ``save_to_disk`` folder."""
    import datasets

    data = _open(source)
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"all": data})
    first = next(iter(data.values()))
    text_col, label_col = detect_columns(first.features, text_column, label_column)
    feature = first.features[label_col]
    to_int: Callable[[Any], int]
    if isinstance(feature, datasets.ClassLabel):
        label_names = tuple(str(n) for n in feature.names)
        to_int = int
    else:
        values = sorted({v for split in data.values() for v in split[label_col] if v is not None})
        label_names = tuple(str(v) for v in values)
        index = {v: i for i, v in enumerate(values)}
        to_int = index.__getitem__

    def examples(split: Any) -> list[Example]:
        out = []
        for text, y in zip(split[text_col], split[label_col], strict=True):
            if y is None or (isinstance(y, int) and y < 0) or not isinstance(text, str):
                continue  # unlabelled rows (e.g. GLUE test sets)
            out.append(Example(text=text, label=to_int(y)))
        return out

    parts = {k: examples(v) for k, v in data.items()}
    dev_key = next((k for k in _DEV_NAMES if parts.get(k)), None)
    name = source if source.startswith("hf:") else Path(source).name
    prompts = generic_prompts(label_names)
    if parts.get("train") and parts.get("test") and dev_key:
        return _task(name, label_names, parts["train"], parts[dev_key], parts["test"], max_length, prompts)
    pool = parts.get("train") or [e for v in parts.values() for e in v]
    if not pool:
        raise ConfigError(f"task {source!r}: no labelled rows in column {label_col!r}")
    n_test, n_dev = default_sizes(len(pool))
    if parts.get("test"):
        n_test = 0
    if dev_key:
        n_dev = 0
    tr, dv, te = stratified_split([e.label for e in pool], n_test, n_dev, seed=seed)
    pick = lambda idx: [pool[i] for i in idx]
    test = parts["test"] if parts.get("test") else pick(te)
    dev = parts[dev_key] if dev_key else pick(dv)
    return _task(name, label_names, pick(tr), dev, test, max_length, prompts)


def _task(
    name: str,
    label_names: tuple[str, ...],
    train: Sequence[Example],
    dev: Sequence[Example],
    test: Sequence[Example],
    max_length: int,
    prompts: dict[str, Any],
) -> Task:
    return Task(
        name=name,
        label_names=label_names,
        train=tuple(train),
        dev=tuple(dev),
        test=tuple(test),
        max_length=max_length,
        prompts=prompts,
        default_prompt="label",
    )
