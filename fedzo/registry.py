"""Registries by name: one way to plug in each closed set of components.

A registry maps a name (as written in a scenario) to a component: a class, a factory
function or a small description object. Unknown names raise a
:class:`~fedzo.errors.ConfigError` that names the option, the value and every valid name,
so a schema validator, a command-line flag and a plug-in lookup all say the same thing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedzo.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Components of one kind by name, in registration order.

    ``kind`` is what a component is ("catch-up policy"); ``option`` is the scenario key
    that names one ("federation.catch_up"), used in error messages.
    """

    def __init__(self, kind: str, option: str) -> None:
        self.kind = kind
        self.option = option
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated component under ``name``."""

        def add(item: T) -> T:
            self.add(name, item)
            return item

        return add

    def add(self, name: str, item: T) -> None:
        """Register ``item`` under ``name`` (a name can be registered once)."""
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item

    def get(self, name: str) -> T:
        """The component named ``name``; a ConfigError lists the valid names."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(self.unknown(name)) from None

    def check(self, name: str) -> str:
        """``name`` if it is registered (for schema validators), else a ValueError."""
        if name not in self._items:
            raise ValueError(f"is not a known {self.kind}; allowed: {', '.join(self._items)}")
        return name

    def unknown(self, name: object) -> str:
        """The message for an unknown name."""
        return f"{self.option}: {name!r} is not a known {self.kind}; allowed: {', '.join(self._items)}"

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        return tuple(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, component) pairs, in registration order."""
        return iter(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items
