"""NSGA-II (Deb et al. 2002) over archs, e.g. maximise score and minimise latency at once.

    nas search --strategy nsga2 --strategy-option objectives=score:max,latency_ms:min

Generational and elitist, with its state a pure function of the history: generation g's parents
are the `population` best finished trials among the first g * population, ranked by
non-dominated sorting and, within the last front that fits, by crowding distance. Children come
from binary tournaments on (front, -crowding), uniform crossover of the two parents' genes (one-
point crossover, then the first parent, when the space rejects the mix) and one mutation; a child
must be feasible and new. The first generation is random feasible archs. Failed trials and trials
lacking an objective never become parents.

Also here: the Pareto helpers (`nondominated_fronts`, `crowding_distance`, `pareto_front`,
`hypervolume_2d`) the benchmarks and summaries use.
"""
from __future__ import annotations

from typing import Any, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.strategies.base import Objectives, Strategy
from nas.store.trial import Trial

DEFAULT_SECOND_OBJECTIVE = ("latency_ms", False)


# ---- Pareto helpers (all objectives minimised) ------------------------------------------------
def nondominated_fronts(values: np.ndarray) -> list[np.ndarray]:
    """Indices of each non-domination front of `values` (n x m, minimised), best front first."""
    f = np.asarray(values, dtype=np.float64)
    n = len(f)
    if n == 0:
        return []
    le = (f[:, None, :] <= f[None, :, :]).all(-1)
    lt = (f[:, None, :] < f[None, :, :]).any(-1)
    dominates = np.asarray(le & lt)            # [i, j]: i dominates j
    count = dominates.sum(0)                   # how many points dominate j
    remaining = np.ones(n, dtype=bool)
    fronts = []
    while remaining.any():
        front = np.flatnonzero(remaining & (count == 0))
        fronts.append(front)
        remaining[front] = False
        count = count - dominates[front].sum(0)
    return fronts


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """Crowding distance of each point of one front (boundary points get infinity)."""
    f = np.asarray(values, dtype=np.float64)
    n, m = f.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for k in range(m):
        order = np.argsort(f[:, k], kind="stable")
        span = f[order[-1], k] - f[order[0], k]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (f[order[2:], k] - f[order[:-2], k]) / span
    return dist


def rank_and_crowding(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front index and crowding distance (within its front) of every point."""
    rank = np.zeros(len(values), dtype=np.int64)
    crowd = np.zeros(len(values))
    for r, front in enumerate(nondominated_fronts(values)):
        rank[front] = r
        crowd[front] = crowding_distance(values[front])
    return rank, crowd


def select_population(values: np.ndarray, size: int) -> np.ndarray:
    """NSGA-II environmental selection: indices of the `size` best by (front, -crowding)."""
    chosen: list[int] = []
    for front in nondominated_fronts(values):
        if len(chosen) + len(front) <= size:
            chosen += front.tolist()
        else:
            crowd = crowding_distance(values[front])
            order = np.argsort(-crowd, kind="stable")
            chosen += front[order[:size - len(chosen)]].tolist()
        if len(chosen) >= size:
            break
    return np.array(chosen, dtype=np.int64)


def objective_matrix(trials: Sequence[Trial], objectives: Objectives) -> tuple[list[Trial], np.ndarray]:
    """Finished trials that have every objective, and their values as a matrix to minimise."""
    keep, rows = [], []
    for t in trials:
        if not t.ok:
            continue
        vals = [t.value(m) for m, _ in objectives]
        if any(v != v for v in vals):
            continue
        keep.append(t)
        rows.append([-v if mx else v for v, (_, mx) in zip(vals, objectives)])
    return keep, np.array(rows, dtype=np.float64).reshape(len(rows), len(objectives))


def pareto_front(trials: Sequence[Trial], objectives: Objectives) -> list[Trial]:
    """The non-dominated trials (sorted by the first objective, best first)."""
    keep, f = objective_matrix(trials, objectives)
    if not keep:
        return []
    front = nondominated_fronts(f)[0]
    return [keep[i] for i in sorted(front, key=lambda i: tuple(f[i]))]


def hypervolume_2d(points: np.ndarray, ref: Sequence[float]) -> float:
    """Area dominated by `points` (n x 2, both minimised) and bounded by the reference point."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    r = np.asarray(ref, dtype=np.float64)
    p = p[(p < r).all(1)]
    if len(p) == 0:
        return 0.0
    p = p[np.lexsort((p[:, 1], p[:, 0]))]
    area, best_y = 0.0, r[1]
    for x, y in p:
        if y < best_y:
            area += (r[0] - x) * (best_y - y)
            best_y = y
    return float(area)


# ---- the strategy -------------------------------------------------------------------------------
class NSGA2(Strategy):
    name = "nsga2"

    def __init__(self, space, *, population: int = 20, crossover: float = 0.9, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
        if kwargs.get("objectives") is None:
            kwargs["objectives"] = ((kwargs.pop("metric", "score"), bool(kwargs.pop("maximize", True))),
                                    DEFAULT_SECOND_OBJECTIVE)
        super().__init__(space, **kwargs)
        if int(population) < 4:
            raise UsageError(f"nsga2 needs population >= 4, got {population}")
        if not 0.0 <= float(crossover) <= 1.0:
            raise UsageError(f"nsga2 crossover probability must be in [0, 1], got {crossover}")
        self.population, self.crossover = int(population), float(crossover)
        self._parents: tuple[int, list[Trial], np.ndarray, np.ndarray] | None = None

    def rebuild(self, trials: Sequence[Trial]) -> None:
        self._parents = None
        super().rebuild(trials)

    def parents(self) -> tuple[list[Trial], np.ndarray, np.ndarray]:
        """This generation's parents with their front index and crowding distance."""
        gen = len(self.history) // self.population
        if self._parents is None or self._parents[0] != gen:
            keep, f = objective_matrix(self.history[:gen * self.population], self.objectives)
            idx = select_population(f, self.population) if keep else np.zeros(0, dtype=np.int64)
            rank, crowd = rank_and_crowding(f[idx]) if len(idx) else (np.zeros(0), np.zeros(0))
            self._parents = (gen, [keep[i] for i in idx], rank, crowd)
        return self._parents[1], self._parents[2], self._parents[3]

    def _tournament(self, rank: np.ndarray, crowd: np.ndarray) -> int:
        a, b = (int(i) for i in self.rng.integers(len(rank), size=2))
        if rank[a] != rank[b]:
            return a if rank[a] < rank[b] else b
        return a if crowd[a] >= crowd[b] else b

    def _crossover(self, a: Arch, b: Arch) -> Arch:
        if self.rng.random() >= self.crossover:
            return a
        n = len(a.genes)
        mask = self.rng.random(n) < 0.5
        cut = int(self.rng.integers(1, n)) if n > 1 else 0
        for genes in ([ga if m else gb for ga, gb, m in zip(a.genes, b.genes, mask)],
                      list(a.genes[:cut]) + list(b.genes[cut:])):
            try:
                return self.space.make(genes)
            except ArchError:
                continue
        return a

    def ask(self) -> Arch:
        arch: Arch | None = None
        if len(self.history) >= self.population:
            parents, rank, crowd = self.parents()
            for _ in range(200 if len(parents) >= 2 else 0):
                pa, pb = parents[self._tournament(rank, crowd)], parents[self._tournament(rank, crowd)]
                child = self.space.mutate(self._crossover(pa.arch, pb.arch), self.rng)
                if self.is_new(child) and self.feasible(child):
                    arch = child
                    break
        if arch is None:
            arch = self.sample_feasible()
        self.mark_asked(arch)   # also when called without a runner
        return arch
