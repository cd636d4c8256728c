"""Is this machine busy? Load above the free cores, or a wide spread of repeated timings.

On a busy 2-core VM the wall clock inflates every net by tens of percent (the time the OS gives to
other processes counts), while the thread's CPU time does not: `nas latency validate` checks the
load before timing and the spread of the repeats after, says so in its output, and recommends
`--clock cpu` (`--clock auto`, the default, uses it whenever one thread is timed). It also reports the measurement's own
repeatability - Spearman and MAPE between two halves of the rounds of the same nets - the ceiling
any latency model can reach on these numbers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

#: median relative spread (IQR / median) of the repeats above which the timings are called noisy
NOISY_SPREAD = 0.10


@dataclass(frozen=True)
class Load:
    load1: float        # 1-minute load average (runnable processes)
    cores: int
    threads: int        # cores the measurement needs

    @property
    def free_cores(self) -> float:
        return max(0.0, self.cores - self.load1)

    @property
    def busy(self) -> bool:
        """Fewer free cores than the measurement's threads: other processes compete with it."""
        return self.free_cores < self.threads

    def describe(self) -> str:
        return (f"load average {self.load1:.2f} on {self.cores} cores ({self.free_cores:.1f} free, "
                f"{self.threads} needed)")


def current_load(threads: int, getloadavg: Callable[[], tuple[float, float, float]] | None = None,
                 cores: int | None = None) -> Load | None:
    """The machine's load now (None where the OS has no load average, e.g. Windows)."""
    try:
        load1 = (getloadavg or os.getloadavg)()[0]
    except (OSError, AttributeError):
        return None
    return Load(float(load1), int(cores or os.cpu_count() or 1), int(threads))


def spread(median_ms: np.ndarray, iqr_ms: np.ndarray) -> float:
    """Median over nets of IQR / median of their repeated timings."""
    m = np.asarray(median_ms, dtype=float)
    ok = m > 0
    return float(np.median(np.asarray(iqr_ms, dtype=float)[ok] / m[ok])) if ok.any() else float("nan")


def halves(samples: np.ndarray) -> tuple[float, float]:
    """Medians of the first and second half of one session's samples (in time order)."""
    t = np.asarray(samples, dtype=float)
    h = max(1, len(t) // 2)
    return float(np.median(t[:h])), float(np.median(t[h:] if len(t) > 1 else t))


def choose_clock(clock: str, load: Load | None, threads: int) -> tuple[str, str | None]:
    """Resolve `auto` (cpu when threads == 1, else wall); the second item is a note for the
    output (a switch made, or a recommendation when the wall clock runs on a busy machine)."""
    busy = load is not None and load.busy
    if clock == "auto":   # one thread: the cpu clock, busy or not (quiet, it reads as the wall clock does)
        if threads == 1:
            return "cpu", (f"machine busy ({load.describe()}): timing with the cpu clock (--clock auto)"
                           if busy and load is not None else None)
        if busy and load is not None:
            return "wall", (f"machine busy ({load.describe()}) and {threads} threads, so no cpu clock: "
                            f"wall-clock timings will read slow; rerun on a quiet machine or with --threads 1")
        return "wall", None
    if clock == "wall" and busy:
        hint = "rerun with --clock cpu" if threads == 1 else "rerun on a quiet machine"
        return "wall", (f"machine busy ({load.describe()}): wall-clock timings include time given to other "
                        f"processes and will read slow; {hint}")
    return clock, None
