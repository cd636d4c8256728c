"""`Arch`: an architecture as plain, frozen, hashable data.

An Arch is the space name plus a tuple of genes (one per decision of the space, in order). Genes are
JSON scalars or nested tuples of them; the space gives them meaning and a human block string.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from nas.core.errors import ArchError

Gene = Any  # str | int | float | tuple[Gene, ...]


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    raise ArchError(f"arch gene {value!r} is not a JSON scalar or list")


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Arch:
    """An architecture of search space `space`; `genes` are canonical (inactive choices removed)."""

    space: str
    genes: tuple[Gene, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "genes", _freeze(self.genes))

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "genes": _thaw(self.genes)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Any) -> "Arch":
        if not isinstance(data, dict) or not isinstance(data.get("space"), str) \
                or not isinstance(data.get("genes"), list):
            raise ArchError(f"arch JSON must be an object with 'space' (string) and 'genes' (list); got {data!r:.200}")
        return cls(data["space"], tuple(data["genes"]))

    @classmethod
    def from_json(cls, text: str) -> "Arch":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"arch JSON is not valid JSON ({exc.msg} at position {exc.pos})") from None
        except RecursionError:
            raise ArchError("arch JSON is nested too deeply to be an architecture") from None
        try:
            return cls.from_dict(data)
        except RecursionError:
            raise ArchError("arch JSON is nested too deeply to be an architecture") from None

    @property
    def key(self) -> str:
        """A short, stable identifier (12 hex chars of a SHA-1 of the canonical JSON)."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:12]
