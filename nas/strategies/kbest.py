"""The k best archs of a separable problem under one latency bound, by one dynamic program.

`exact` used to solve one more integer program per trial (the optimum with every evaluated arch cut
off), so trial n cost a MILP with n no-good cuts: `--strategy exact --trials 500` did not finish in
300 s. With one bounded target the k best feasible archs come from one pass over the decisions that
keeps, after each decision, only the partial archs that could still be among the k best:

a partial arch P is dropped when k others Q are at least as good - no slower and scoring at least as
much (ties broken by order) - because each Q completed with P's remaining choices is feasible whenever
P's completion is and scores at least as much. Partial archs whose latency plus the cheapest remaining
choices already exceeds the bound are dropped too. What is left after the last decision holds the k
best feasible archs; sorted by score they are trials 1..k.
"""
from __future__ import annotations

import heapq

import numpy as np

from nas.strategies.problem import AdditiveTable


def _k_dominated(score: np.ndarray, lat: np.ndarray, k: int) -> np.ndarray:
    """Mask of the items that k others are at least as good as (no slower, score at least as high)."""
    order = np.lexsort((-score, lat))           # fastest first, higher score first among equal latency
    heap: list[float] = []                      # the k highest scores seen so far (min-heap)
    out = np.zeros(len(score), dtype=bool)
    for i in order:
        s = float(score[i])
        if len(heap) >= k and s <= heap[0]:
            out[i] = True
            continue
        if len(heap) < k:
            heapq.heappush(heap, s)
        else:
            heapq.heapreplace(heap, s)
    return out


def k_best(score: AdditiveTable, latency: AdditiveTable, bound: float, k: int,
           maximize: bool = True) -> list[np.ndarray]:
    """Choice codes of the (up to) k best archs with `latency <= bound`, best first."""
    sign = 1.0 if maximize else -1.0
    values = [sign * np.asarray(v, dtype=np.float64) for v in score.values]
    lats = [np.asarray(v, dtype=np.float64) for v in latency.values]
    rest = np.concatenate([np.cumsum([v.min() for v in lats[::-1]])[::-1][1:], [0.0]])  # cheapest suffix
    s = np.array([sign * score.const])
    lat = np.array([latency.const])
    codes = np.zeros((1, 0), dtype=np.int64)
    for i, (v, t) in enumerate(zip(values, lats)):
        n = len(v)
        s = (s[:, None] + v[None, :]).ravel()
        lat = (lat[:, None] + t[None, :]).ravel()
        codes = np.concatenate([np.repeat(codes, n, axis=0), np.tile(np.arange(n), len(codes))[:, None]], 1)
        keep = lat + rest[i] <= bound
        s, lat, codes = s[keep], lat[keep], codes[keep]
        if len(s) > k:
            keep = ~_k_dominated(s, lat, k)
            s, lat, codes = s[keep], lat[keep], codes[keep]
    order = np.lexsort((lat, -s))[:k]
    return [codes[j] for j in order]
