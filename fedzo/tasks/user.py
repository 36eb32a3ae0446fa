"""Tasks from a user's own data: CSV, TSV, JSON, JSON Lines or Parquet files (or a folder of
them), a folder written by ``datasets.save_to_disk``, or a hub dataset ``hf:name[:config]``.

Text and label columns are taken from the options or detected (a ``ClassLabel`` or a
column named like ``label``; the only string column or one named like ``text``). Label
values (integers, floats or strings) map to classes the same way in every format
(:mod:`fedzo.tasks.labels`: ``label_map``, ``label_names`` by value or by index); a training
split needs two classes and rows of every class. The verbalizer words (the answers the
model is scored on) default to the label names. Splits ``train`` /
``validation`` (or ``dev``) / ``test`` are used where present and labelled (as dataset
splits, or files named ``train.csv``, ``dev.csv``, ...); missing ones are carved from
train, stratified by seed, with the sizes given or the shipped corpora's defaults.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedzo.errors import ConfigError
from fedzo.tasks.labels import check_classes, resolve
from fedzo.tasks.prompts import generic_prompts
from fedzo.tasks.splits import default_sizes, stratified_split
from fedzo.tasks.textfiles import check_text_file
from fedzo.tasks.types import Example, Prompt, Task

__all__ = ["FILE_FORMATS", "TaskOptions", "detect_columns", "load_user_task"]

_TEXT_NAMES = ("text", "sentence", "content", "review", "document", "comment", "tweet")
_LABEL_NAMES = ("label", "labels", "class", "target", "category", "sentiment", "y")
_DEV_NAMES = ("validation", "dev", "valid")
_SPLIT_FILES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation",
                "test": "test"}
# file suffix -> the datasets builder that reads it
FILE_FORMATS: dict[str, str] = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                                ".parquet": "parquet"}


@dataclass(frozen=True)
class TaskOptions:
    """How to read a user's dataset (the ``data:`` keys of a scenario)."""

    text_column: str | None = None
    label_column: str | None = None
    label_names: tuple[str, ...] | None = None  # the classes: named by value, or by index 0..K-1
    label_map: Mapping[Any, str] | None = None  # label value -> class name (fedzo.tasks.labels)
    verbalizer: tuple[str, ...] | None = None  # the answer word of each label (default: the names)
    template: str | None = None  # a prompt template with {text} (default: "{text}\\nLabel:")
    dev_size: int | None = None
    test_size: int | None = None
    encoding: str = "utf-8"  # of text files (CSV, TSV, JSON Lines)


def detect_columns(features: Any, text_column: str | None, label_column: str | None,
                   source: str = "the dataset") -> tuple[str, str]:
    """The (text, label) column names of a dataset with these ``features`` (``source`` names it in errors)."""
    from datasets import ClassLabel, Value

    columns = list(features)
    for given, what in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if given is not None and given not in columns:
            raise ConfigError(f"{what}: {given!r} is not a column of {source}; columns: {', '.join(columns)}")
    if label_column is None:
        found = [c for c in columns if isinstance(features[c], ClassLabel)] or [
            c for c in columns if c.lower() in _LABEL_NAMES]
        if len(found) != 1:
            raise ConfigError(f"cannot tell the label column of {source} among {', '.join(columns)}; set data.label_column "
                              "(CLI: --label-column)")
        label_column = found[0]
    if text_column is None:
        strings = [c for c in columns if c != label_column and isinstance(features[c], Value)
                   and features[c].dtype in ("string", "large_string")]
        named = [c for c in strings if c.lower() in _TEXT_NAMES]
        found = named if len(named) == 1 else strings
        if len(found) != 1:
            raise ConfigError(f"cannot tell the text column of {source} among {', '.join(columns)}; set data.text_column "
                              "(CLI: --text-column)")
        text_column = found[0]
    return text_column, label_column


def _data_files(path: Path) -> tuple[str, dict[str, list[str]]]:
    """(builder, split -> files) of a data file or a folder of them (one format)."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix.lower() in FILE_FORMATS)
    formats = {FILE_FORMATS.get(p.suffix.lower()) for p in files}
    if not files or None in formats:
        raise ConfigError(f"data.task: {str(path)!r} holds no data file; allowed: "
                          f"{', '.join(FILE_FORMATS)} files, a folder of them, or a save_to_disk folder")
    if len(formats) > 1:
        raise ConfigError(f"data.task: {str(path)!r} mixes file formats ({', '.join(sorted(str(f) for f in formats))}); "
                          "keep one format per folder")
    splits: dict[str, list[str]] = {}
    for p in files:
        split = _SPLIT_FILES.get(p.stem.lower(), "train") if path.is_dir() else "train"
        splits.setdefault(split, []).append(str(p))
    return str(formats.pop()), splits


def _open(source: str, encoding: str = "utf-8") -> Any:
    import datasets

    datasets.disable_progress_bars()  # per-split bars for small files are noise in run logs
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        try:
            return datasets.load_dataset(name, config or None)
        except Exception as exc:
            raise ConfigError(f"data.task: {source!r}: cannot load dataset {name!r}"
                              f"{f' config {config!r}' if config else ''} ({type(exc).__name__}: {exc}); "
                              "hub datasets need network access and HF_DATASETS_OFFLINE=0") from exc
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(f"data.task: {source!r} is neither a known task, an 'hf:' dataset nor an existing path")
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        return datasets.load_from_disk(str(path))
    builder, files = _data_files(path)
    kwargs: dict[str, Any] = {"delimiter": "\t"} if any(f.endswith(".tsv") for fs in files.values() for f in fs) else {}
    if builder != "parquet":
        for fs in files.values():
            for f in fs:
                check_text_file(Path(f), encoding, builder)
        kwargs["encoding"] = encoding
    try:
        return datasets.load_dataset(builder, data_files=files, **kwargs)
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__
        why = f"{type(exc).__name__}: {exc}" + (f"; caused by {type(cause).__name__}: {cause}" if cause else "")
        raise ConfigError(f"data.task: {source!r}: cannot read the {builder} data ({why})") from exc


def _labels(data: Any, label_col: str, options: TaskOptions) -> tuple[tuple[str, ...], Callable[[Any], int | None]]:
    """The label names and a map from a row's label value to its index (None: unlabelled);
    :mod:`fedzo.tasks.labels` says how values map to names."""
    import datasets

    first = next(iter(data.values()))
    feature = first.features[label_col]
    if isinstance(feature, datasets.ClassLabel) and options.label_names is None and options.label_map is None:
        return tuple(str(n) for n in feature.names), lambda y: None if y is None or y < 0 else int(y)
    found = {v for split in data.values() for v in split[label_col]}
    return resolve(found, label_col, options.label_names, options.label_map)


def _prompts(names: tuple[str, ...], options: TaskOptions) -> tuple[dict[str, Prompt], str]:
    """The task's prompts and the default one (a custom template when given)."""
    words = tuple(w if w[:1].isspace() else f" {w}" for w in (options.verbalizer or names))
    if len(words) != len(names):
        raise ConfigError(f"data.verbalizer: {len(words)} words for {len(names)} labels ({', '.join(names)}); "
                          "give one word per label, in label order")
    prompts = generic_prompts(names, words)
    if options.template is None:
        return prompts, "label"
    if "{text}" not in options.template:
        raise ConfigError(f"data.template: {options.template!r} has no {{text}}; it must show where the text goes")
    prompts["custom"] = Prompt(name="custom", template=options.template, verbalizer=words)
    return prompts, "custom"


def load_user_task(source: str, *, seed: int = 0, options: TaskOptions | None = None, max_length: int = 256) -> Task:
    """A :class:`Task` from a user's files, a ``save_to_disk`` folder or a hub dataset."""
    import datasets

    opts = options or TaskOptions()
    data = _open(source, opts.encoding)
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"all": data})
    if all(len(split) == 0 for split in data.values()):
        raise ConfigError(f"data.task: {source!r} has no rows (only a header?)")
    text_col, label_col = detect_columns(next(iter(data.values())).features, opts.text_column, opts.label_column,
                                        repr(source))
    names, to_int = _labels(data, label_col, opts)

    def examples(split: Any) -> list[Example]:
        rows = ((t, to_int(y)) for t, y in zip(split[text_col], split[label_col], strict=True))
        return [Example(text=t, label=y) for t, y in rows if y is not None and isinstance(t, str)]

    parts = {k: examples(v) for k, v in data.items()}
    prompts, default = _prompts(names, opts)
    name = source if source.startswith("hf:") else Path(source).name
    train, dev, test = _splits(parts, seed, opts, source, label_col)
    check_classes(names, {"train": [e.label for e in train], "dev": [e.label for e in dev],
                          "test": [e.label for e in test]}, source,
                  lambda msg: print(f"fedzo: warning: {msg}", file=sys.stderr))
    return Task(name=name, label_names=names, train=tuple(train), dev=tuple(dev), test=tuple(test),
                max_length=max_length, prompts=prompts, default_prompt=default)


def _splits(parts: dict[str, list[Example]], seed: int, opts: TaskOptions, source: str,
            label_col: str) -> tuple[Sequence[Example], Sequence[Example], Sequence[Example]]:
    """train, dev and test: the dataset's own where present, the rest carved from train."""
    dev_key = next((k for k in _DEV_NAMES if parts.get(k)), None)
    if parts.get("train") and parts.get("test") and dev_key:
        return parts["train"], parts[dev_key], parts["test"]
    pool = parts.get("train") or [e for v in parts.values() for e in v]
    if not pool:
        raise ConfigError(f"data.task: {source!r}: no rows left after dropping the unlabelled ones (the label column "
                          f"{label_col!r} is empty in every row)")
    n_test, n_dev = default_sizes(len(pool))
    n_test = 0 if parts.get("test") else opts.test_size if opts.test_size is not None else n_test
    n_dev = 0 if dev_key else opts.dev_size if opts.dev_size is not None else n_dev
    if n_test + n_dev >= len(pool):
        raise ConfigError(f"data.test_size + data.dev_size ({n_test} + {n_dev}) leave no training rows of the "
                          f"{len(pool)} in {source!r}; lower them")
    tr, dv, te = stratified_split([e.label for e in pool], n_test, n_dev, seed=seed)
    test = parts["test"] if parts.get("test") else [pool[i] for i in te]
    dev = parts[dev_key] if dev_key else [pool[i] for i in dv]
    return [pool[i] for i in tr], dev, test
