"""`Trial` records and the store they go to.

A trial is the unit of search history: the arch asked, its metrics, status and error, timings and
seed. Strategies rebuild their state from a list of trials, so a search can resume from its store.
"""
from __future__ import annotations

import logging

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol

from nas.core.arch import Arch

COMPLETE, FAILED = "complete", "failed"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trial:
    number: int
    arch: Arch
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = COMPLETE
    error: str | None = None
    seconds: float = 0.0
    seed: int = 0

    @property
    def ok(self) -> bool:
        return self.status == COMPLETE

    def value(self, metric: str) -> float:
        v = self.metrics.get(metric, math.nan)
        return float(v) if v is not None else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "arch": self.arch.to_dict(), "metrics": self.metrics,
                "status": self.status, "error": self.error, "seconds": round(self.seconds, 6), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        return cls(int(d["number"]), Arch.from_dict(d["arch"]), dict(d.get("metrics") or {}),
                   d.get("status", COMPLETE), d.get("error"), float(d.get("seconds", 0.0)), int(d.get("seed", 0)))


class TrialStore(Protocol):
    def append(self, trial: Trial) -> None: ...

    def trials(self) -> list[Trial]: ...


class MemoryStore:
    def __init__(self, trials: Iterable[Trial] = ()) -> None:
        self._trials = list(trials)

    def append(self, trial: Trial) -> None:
        self._trials.append(trial)

    def trials(self) -> list[Trial]:
        return list(self._trials)


class JsonlStore:
    """One JSON line per finished trial, flushed as it is written (a killed search loses nothing
    that finished; a torn last line from a crash mid-write is ignored on reading)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, trial: Trial) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(trial.to_dict()) + "\n")
            fh.flush()

    def trials(self) -> list[Trial]:
        if not self.path.exists():
            return []
        out = []
        lines = self.path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                out.append(Trial.from_dict(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, RecursionError):
                why = "cut short (a write stopped mid-line)" if n == len(lines) else "not a trial"
                log.warning("%s line %d is %s; skipped: %.80r", self.path, n, why, line)
        return out
