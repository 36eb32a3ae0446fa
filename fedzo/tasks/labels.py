"""Label values of a user's dataset mapped to class names, the same way in every file format.

A label column arrives as integers (JSON Lines, Parquet ``Int64``), as floats (a CSV integer
column with empty cells, which pandas reads as ``1.0``, ``3.0``, ``NaN``) or as strings. Each
value is first put in one canonical form (``3.0`` -> ``3``; empty, ``NaN``, ``None`` and ``-1``
-> unlabelled), then mapped to a class:

1. ``data.label_map`` (``{1: bad, 3: ok, 5: good}``): explicit, several values may share a
   class; the classes are the map's names in the order they first appear.
2. ``data.label_names`` that name the values found (``["1", "3", "5"]`` or ``[1, 3, 5]``):
   matched by value, classes in the order given.
3. ``data.label_names`` for integer values ``0..K-1``: the values are class indices.
4. neither: the values found are the classes, sorted (numbers numerically).

Anything else is an error that names the values found and shows the ``label_map`` to write.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fedzo.errors import ConfigError

Value = int | str


def canonical(value: Any) -> Value | None:
    """One form for a label value: integral numbers as ``int``, other values as stripped
    strings; None for an unlabelled row (None, NaN, an empty string, -1)."""
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        value = int(value) if value.is_integer() else value
    if isinstance(value, int):
        return None if value == -1 else value
    text = str(value).strip()
    if not text:
        return None
    try:  # "3" and "3.0" in a string column are the number 3 (and "-1" is unlabelled, as -1 is)
        number = float(text)
    except ValueError:
        return text
    return canonical(number) if number.is_integer() else text


def _shown(values: Iterable[Value]) -> list[Value]:
    return sorted(values, key=lambda v: (isinstance(v, str), v if isinstance(v, int) else str(v)))


def _suggestion(values: Sequence[Value], names: Sequence[str] | None) -> str:
    targets = list(names) if names and len(names) == len(values) else [f"name{i}" for i in range(len(values))]
    pairs = ", ".join(f"{v if isinstance(v, int) else repr(v)}: {n}" for v, n in zip(values, targets, strict=True))
    return f"write the mapping as `label_map: {{{pairs}}}` under data:"


def resolve(found: Iterable[Any], column: str, label_names: Sequence[Any] | None = None,
            label_map: Mapping[Any, str] | None = None) -> tuple[tuple[str, ...], Callable[[Any], int | None]]:
    """The class names and a map from a raw label value to its class index (None: unlabelled)."""
    values = _shown({v for v in (canonical(x) for x in found) if v is not None})
    if label_map is not None:
        mapping = {canonical(k): str(n) for k, n in label_map.items()}
        names = tuple(dict.fromkeys(mapping.values()))
        unmapped = [v for v in values if v not in mapping]
        if unmapped:
            raise ConfigError(f"data.label_map: the label column {column!r} holds the values {unmapped[:10]} that the "
                              f"map does not name (it maps {_shown(k for k in mapping if k is not None)}); add them")
        index = {v: names.index(n) for v, n in mapping.items()}
        return names, lambda y: None if (c := canonical(y)) is None else index[c]
    if label_names is not None:
        names = tuple(str(canonical(n) if canonical(n) is not None else n) for n in label_names)
        if len(set(names)) != len(names):
            raise ConfigError(f"data.label_names: {list(label_names)} names a class twice")
        if all(str(v) in names for v in values):  # matched by value
            by_value = {n: i for i, n in enumerate(names)}
            return names, lambda y: None if (c := canonical(y)) is None else by_value[str(c)]
        if all(isinstance(v, int) and 0 <= v < len(names) for v in values):  # indices 0..K-1
            return names, lambda y: None if (c := canonical(y)) is None else int(c)
        raise ConfigError(
            f"data.label_names: the label column {column!r} holds the values {values[:10]}; the names "
            f"{list(names)} match none of them by value, and as class indices they would need 0..{len(names) - 1}; "
            + _suggestion(values, names))
    names = tuple(str(v) for v in values)
    found_at: dict[Value, int] = {v: i for i, v in enumerate(values)}
    return names, lambda y: None if (c := canonical(y)) is None else found_at[c]


def check_classes(names: Sequence[str], splits: Mapping[str, Sequence[int]], source: str,
                  warn: Callable[[str], None]) -> None:
    """Refuse a training split with fewer than two classes or a class without training rows;
    warn loudly about a class missing from dev or test (its accuracy is then not measured)."""
    train = set(splits.get("train", ()))
    if len(train) < 2:
        present = [names[i] for i in sorted(train)]
        raise ConfigError(f"data.task: {source!r}: the training rows carry {len(train)} class(es) {present}; a "
                          "classifier needs at least two (check data.label_column and the label values)")
    empty = [n for i, n in enumerate(names) if i not in train]
    if empty:
        raise ConfigError(f"data.task: {source!r}: the class(es) {empty} have no training rows (classes: "
                          f"{list(names)}); drop them from data.label_names / data.label_map, or add rows")
    for split in ("dev", "test"):
        rows = set(splits.get(split, ()))
        missing = [n for i, n in enumerate(names) if i not in rows]
        if rows and missing:
            warn(f"data.task: {source!r}: the {split} split has no rows of the class(es) {missing}; its accuracy "
                 "says nothing about them")
