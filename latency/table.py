"""`LatencyTable`: per-layer latencies of one space on one device, with measurement metadata.

File format (JSON, written atomically)::

    {"format": "nas-latency-table/1", "space": "mbconv", "space_options": {...},
     "metadata": {"device": ..., "runtime": "onnxruntime", "runtime_version": ..., "provider": ...,
                  "threads": 1, "opt_level": "all", "batch": 1, "warmup": 10, "repeats": 50,
                  "statistic": "median", "date": ..., ...},
     "entries": {"<layer key>": {"ms": 0.123, "iqr_ms": 0.004}, ...}}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.core.files import atomic_write_text
from nas.core.errors import LatencyError, MissingEntryError
from nas.core.space import NET_NEUTRAL_OPTIONS

FORMAT = "nas-latency-table/1"
#: refuse bigger table files before reading them (the largest shipped one is ~80 kB, ~500 layers;
#: 32 MB is ~200,000 entries, more than any space here has layers)
MAX_TABLE_BYTES = 32 * 2 ** 20


@dataclass
class LatencyTable:
    space: str
    space_options: dict[str, Any]
    metadata: dict[str, Any]
    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    source: str = "<memory>"

    def ms(self, key: str) -> float:
        try:
            return self.entries[key]["ms"]
        except KeyError:
            raise MissingEntryError(key, self.source) from None

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def add(self, key: str, ms: float, **stats: float) -> None:
        if isinstance(ms, bool) or not (isinstance(ms, (int, float)) and math.isfinite(ms) and ms >= 0):
            raise LatencyError(f"latency for {key!r} must be a finite non-negative number, got {ms!r}")
        self.entries[key] = {"ms": float(ms), **{k: float(v) for k, v in stats.items()}}

    # ---- files -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "space": self.space, "space_options": self.space_options,
                "metadata": self.metadata, "entries": dict(sorted(self.entries.items()))}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        self.source = str(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_TABLE_BYTES:
                raise LatencyError(f"latency table {path} is {size / 2 ** 20:.0f} MB, over the "
                                   f"{MAX_TABLE_BYTES // 2 ** 20} MB limit of a table file; it is not a layer table")
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise LatencyError(f"cannot read latency table {path}: {getattr(exc, 'strerror', None) or exc}") from None
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as exc:
            raise LatencyError(f"latency table {path} is corrupt: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        except _DuplicateKey as exc:
            raise LatencyError(f"latency table {path} is corrupt: key {_clip(exc.args[0])!r} appears twice "
                               f"(which entry is meant is ambiguous)") from None
        except RecursionError:
            raise LatencyError(f"latency table {path} is corrupt: JSON nested too deeply") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> "LatencyTable":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LatencyError(f"latency table {source} has format {got!r}; expected {FORMAT!r}")
        for name, kind in (("space", str), ("space_options", dict), ("metadata", dict), ("entries", dict)):
            if not isinstance(data.get(name), kind):
                raise LatencyError(f"latency table {source}: field {name!r} missing or not a {kind.__name__}")
        table = cls(data["space"], data["space_options"], data["metadata"], {}, source)
        for key, entry in data["entries"].items():
            if not isinstance(entry, dict) or "ms" not in entry:
                raise LatencyError(f"latency table {source}: entry {key!r} has no 'ms' value")
            try:
                table.add(key, entry["ms"], **{k: v for k, v in entry.items() if k != "ms"})
            except (LatencyError, TypeError, ValueError, OverflowError) as exc:  # 10**400 -> float
                raise LatencyError(f"latency table {source}: entry {key!r} is invalid ({exc})") from None
        return table

    def check_space(self, space_name: str, options: dict[str, Any]) -> None:
        """Raise unless this table was made for `space_name` with the same options."""
        if self.space != space_name:
            raise LatencyError(f"latency table {self.source} is for space {self.space!r}, not {space_name!r}")
        if _norm(self.space_options) != _norm(options):
            raise LatencyError(f"latency table {self.source} was made for {self.space} options "
                               f"{json.dumps(self.space_options, sort_keys=True)}, not {json.dumps(options, sort_keys=True)}")


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: a key given twice is an error (plain json.loads keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _norm(options: dict[str, Any]) -> str:
    """Options as comparable text, without the ones that do not change the nets (a candidate list)."""
    return json.dumps({k: v for k, v in options.items() if k not in NET_NEUTRAL_OPTIONS}, sort_keys=True, default=list)


