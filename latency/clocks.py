"""Clocks for timing onnxruntime runs, and the preemption correction of the CPU clock.

`wall` is what a user waits for. `cpu` is this thread's CPU time (one intra-op thread only): time
the OS gives to other processes does not count. It is not free of them, though: each time the
thread is preempted, the process that ran meanwhile evicts its caches and TLB, and the refill is
paid in CPU time after the thread resumes. On a busy 2-core VM a 5 ms net is preempted once or
twice in every run while a 0.2 ms layer almost never is, so the CPU time of whole nets read
6-11% above the sum of their layers (measured: `cpu = 4.83 ms + 0.34 ms x switches` for one mbconv
net at load 3.4; its layers summed to 4.85 ms).

The correction: count the thread's involuntary context switches around every run (Linux
`getrusage(RUSAGE_THREAD)`), estimate the CPU time one switch costs by a pooled within-session
regression (each session's own mean removed, so a long net and a short layer share only the
slope), and subtract `cost x switches` from every run. Where the platform cannot count switches
the raw CPU time is used and the correction is reported as unavailable.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from nas.core.errors import UsageError

CLOCK_NAMES = ("wall", "cpu")
_FUNCS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


def clock_function(name: str) -> Callable[[], float]:
    try:
        return _FUNCS[name]
    except KeyError:
        raise UsageError(f"unknown clock {name!r}; valid: {', '.join(CLOCK_NAMES)}") from None


def switch_counter() -> Callable[[], int] | None:
    """Involuntary context switches of the calling thread so far, or None where not countable."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    if who is None:
        return None
    try:
        resource.getrusage(who)
    except (OSError, ValueError):
        return None
    return lambda: resource.getrusage(who).ru_nivcsw


def switch_cost(times: Sequence[np.ndarray], switches: Sequence[np.ndarray]) -> float | None:
    """CPU ms one involuntary switch adds to a run: the pooled within-session least-squares slope
    of time on switches, clipped at 0. None when no session's runs differ in their switch counts."""
    xs, ys = [], []
    for t, k in zip(times, switches):
        t, k = np.asarray(t, dtype=float), np.asarray(k, dtype=float)
        if len(k) > 1 and np.ptp(k) > 0:
            xs.append(k - k.mean())
            ys.append(t - t.mean())
    if not xs:
        return None
    x, y = np.concatenate(xs), np.concatenate(ys)
    return max(0.0, float(x @ y / (x @ x)))


@dataclass(frozen=True)
class SwitchReport:
    cost_ms: float | None           # estimated CPU ms per involuntary switch (None: not estimable)
    switches_per_run: float         # mean over all timed runs
    runs_switched_pct: float        # share of runs with at least one switch

    def to_dict(self) -> dict[str, float | None]:
        return {"switch_cost_ms": None if self.cost_ms is None else round(self.cost_ms, 5),
                "switches_per_run": round(self.switches_per_run, 4),
                "runs_switched_pct": round(self.runs_switched_pct, 2)}


def correct(times: Sequence[np.ndarray], switches: Sequence[np.ndarray]) -> tuple[list[np.ndarray], SwitchReport]:
    """Each session's runs less `cost x switches` (never below 0), and what was removed."""
    cost = switch_cost(times, switches)
    allk = np.concatenate([np.asarray(k, dtype=float) for k in switches]) if switches else np.zeros(0)
    report = SwitchReport(cost, float(allk.mean()) if len(allk) else 0.0,
                          float((allk > 0).mean() * 100) if len(allk) else 0.0)
    if cost is None or cost == 0.0:
        return [np.asarray(t, dtype=float) for t in times], report
    return [np.maximum(0.0, np.asarray(t, dtype=float) - cost * np.asarray(k, dtype=float))
            for t, k in zip(times, switches)], report
