"""Name -> object registries that raise on duplicates and on unknown names (listing the valid ones)."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from nas.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small named registry; `kind` appears in error messages ("space", "strategy", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register `obj` under `name`; usable as a decorator when `obj` is omitted."""
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item
        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
