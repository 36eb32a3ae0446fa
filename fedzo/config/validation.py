"""Validation of config files and flags into frozen pydantic objects, with errors that
name the file, the key path, the value and what is allowed: all problems at once.

A model validator reports combination problems as one ``ValueError`` with one line per
problem, each line starting with the key path it is about; each is reported separately."""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fedzo.errors import ConfigError, ScenarioError

M = TypeVar("M", bound=BaseModel)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The allowed values of a Literal field, or the known keys for an unknown key."""
    cls: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        for arg in (ann, *typing.get_args(ann)):
            for sub in (arg, *typing.get_args(arg)):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    cls = sub
    if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
        return None
    last = loc[-1] if loc else None
    if isinstance(last, str) and last in cls.model_fields:
        ann = cls.model_fields[last].annotation
        lits = [a for a in (ann, *typing.get_args(ann)) if typing.get_origin(a) is typing.Literal]
        if lits:
            return ", ".join(str(v) for v in typing.get_args(lits[0]))
    return "known keys: " + ", ".join(cls.model_fields)


def format_errors(exc: ValidationError, model: type[BaseModel], source: str) -> list[str]:
    """One line per problem: ``source: key.path: value: message[; allowed: ...]``."""
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        msg = err.get("msg", "invalid")
        value = err.get("input")
        kind = err.get("type", "")
        line = f"{source}: {_path(loc)}: "
        if kind == "value_error" and isinstance(value, dict):  # a model validator's combination problems
            lines += [f"{source}: {part}" for part in msg.removeprefix("Value error, ").splitlines()]
            continue
        if kind == "extra_forbidden":
            line += "unknown key"
            allowed = _allowed(model, loc)
            if allowed:
                line += f"; {allowed}"
        elif kind == "missing":
            line += "required key is missing"
        else:
            shown = repr(value) if not isinstance(value, dict) else "{...}"
            line += f"{shown}: {msg.removeprefix('Value error, ')}"
            allowed = _allowed(model, loc) if kind == "literal_error" else None
            if allowed and not allowed.startswith("known keys"):
                line += f" (allowed: {allowed})"
        lines.append(line)
    return lines


def validate(model: type[M], data: Any, source: str, *, error: type[ConfigError] = ConfigError) -> M:
    """``model.model_validate(data)`` with every problem reported in one error."""
    if not isinstance(data, dict):
        raise error(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = format_errors(exc, model, source)
        head = f"{len(lines)} problems in {source}:\n  " if len(lines) > 1 else ""
        raise error(head + "\n  ".join(lines)) from None


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file (missing, empty, syntax with line)."""
    p = Path(path)
    if not p.exists():
        raise ScenarioError(f"{p}: no such file")
    if p.is_dir():
        raise ScenarioError(f"{p}: is a directory, expected a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{p}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot be read: {exc.strerror or exc}") from None
    if not text.strip():
        raise ScenarioError(f"{p}: file is empty; expected a YAML mapping")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{p}: YAML syntax error at {where}: {problem}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{p}: expected a YAML mapping at the top level, got {type(data).__name__}")
    return data
