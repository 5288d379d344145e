"""One registry shape for every named, pluggable thing (policies, data sets, assets, benchmarks).

As papermill's ``PapermillEngines``: ``register`` (also a decorator), ``get`` with an error that
lists the known names, ``names()``. Each subsystem owns its own ``Registry`` object, so a name
such as "priority" means one thing per registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # "allocation policy", "dataset", ...: the error names it
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """Add ``entry`` under ``name`` (a later registration replaces it); without
        ``entry``, a decorator."""
        if not isinstance(name, str) or not name:
            raise ConfigError("name", name, f"a non-empty string naming a {self.kind}")

        def add(value: T) -> T:
            self._entries[name] = value
            return value
        return add if entry is None else add(entry)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownNameError(self.kind, name, self._entries) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def values(self) -> list[T]:
        return [self._entries[n] for n in self.names()]

    def copy(self) -> Registry[T]:
        """A registry with the same entries (tests register into a copy)."""
        other = Registry[T](self.kind)
        other._entries = dict(self._entries)
        return other

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
