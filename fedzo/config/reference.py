"""The scenario reference (``docs/scenarios.md``), generated from the schema."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from fedzo.config.migrate import RENAMED
from fedzo.config.scenario import Scenario


def _type_name(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return " | ".join(repr(a) if isinstance(a, str) else str(a) for a in typing.get_args(ann))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(ann))
    if origin is list:
        (arg,) = typing.get_args(ann)
        return f"list of {_type_name(arg)}"
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann))


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        nested = [a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "see below" if nested else "[]"
        else:
            default = f"`{field.default!r}`" if field.default is not None else "`null`"
        desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        typ = _type_name(ann).replace("|", "\\|")
        rows.append(f"| `{key}` | {typ} | {default} | {desc} |")
        is_list = typing.get_origin(ann) is list
        for sub in [] if is_list else nested:
            rows += _rows(sub, f"{key}.")
        if is_list:
            for sub in typing.get_args(ann):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    rows += _rows(sub, f"{key}[].")
    return rows


def scenario_reference() -> str:
    """Markdown reference of every scenario key, generated from the schema."""
    head = [
        "# Scenario reference",
        "",
        "Generated from the schema (`fedzo/config/`) by `fedzo validate --reference`; a test",
        "checks that this file is current. Every key is optional unless marked required.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    renamed = ["", "## Keys renamed in version 2", "",
               ("Files without `version: 2` are read in the older flat format and upgraded; "
                "`fedzo validate --upgrade FILE` prints the upgraded file."), "",
               "| version 1 | version 2 |", "|---|---|"]
    renamed += [f"| `{old}` | `{new}` |" for old, new in RENAMED]
    return "\n".join(head + _rows(Scenario, "") + renamed) + "\n"
