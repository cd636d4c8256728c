"""GP screening of evolution's children (`RegularizedEvolution(screen=...)`).

On problems without latency tables (a non-separable space or model, e.g. the ground-truth
benchmarks, whose accuracy is no sum over layers) each ask draws up to `screen` children and keeps
the feasible new one of highest expected improvement under a Gaussian process on the arch
encodings (`nas.strategies.surrogate`) fitted to the history. A share of the pool (evolution's
`explore`, 0.8 by default) is random feasible archs of the whole space rather than children, so
expected improvement also ranks archs far from the population: the BANANAS / NASLib acquisition mixes
mutations of the best archs with random samples. Children alone searched a candidate list poorly
(nb201's 724 NASLib archs: most mutations fall outside the list and map back to the parent's nearest
candidate). Tuned on `nas bench strategies` seeds 100-119 only (reported seeds: 0-19), mean regret at
50 / 100 evaluations:

    explore          0 (before)     0.25           0.5            0.8            1.0
    nb201            0.431 / 0.170  0.357 / 0.045  0.243 / 0.046  0.255 / 0.000  0.193 / 0.019
    nats_sss         0.143 / 0.051  -              0.070 / 0.025  0.099 / 0.023  -
    (random search: nb201 0.625 / 0.254; bo: nb201 0.074 / 0.000; the columns 0.25-1.0 drew the random
    archs by rejection sampling, before the pool below: with it, 0.8 gives nb201 0.188 / 0.000)

With a small space (a candidate list, or at most `surrogate.ENUMERATE` genotypes) the random archs are
drawn from its enumerated pool, prefiltered by latency in one batch; a larger space's are plain samples,
checked for feasibility only when ranked first, like the children. The training set is capped at
`CAP` trials (the best half and the most recent half), and the GP's hyperparameters are re-chosen
every 10 trials, so the cost per trial is bounded whatever the history's length.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from nas.core.arch import Arch
from nas.store.trial import Trial

#: at most this many trials train the GP (half the fittest, half the most recent)
CAP = 300
#: pool entries looked at per random arch sought (a bound keeping a nearly exhausted pool cheap)
_EXPLORE_TRIES = 10


class Screen:
    """The GP state of one strategy: its encoder, per-arch codes and when it last chose hyperparameters."""

    def __init__(self, space: Any, fitness: Callable[[Trial], float], problem: Any = None) -> None:
        self.space, self.fitness, self.problem = space, fitness, problem
        self._pool: Any = False   # surrogate.ArchPool of a small space (None: too large), built on first use
        self._gp: Any = None
        self._encoder: Any = None
        self._round = -1
        self._codes: dict[Arch, np.ndarray] = {}

    def code(self, arch: Arch) -> np.ndarray:
        codes = self._codes.get(arch)
        if codes is None:
            codes = self._codes[arch] = self.space.encode(arch)
        return codes

    def fit(self, history: Sequence[Trial]) -> Any:
        """The GP fitted to at most `CAP` trials of `history`; None with fewer than 2 finite ones or
        when the kernel matrix cannot be factorised."""
        from nas.strategies.surrogate import GP, Encoder
        done = [t for t in history if np.isfinite(self.fitness(t))]
        if len(done) < 2:
            return None
        if len(done) > CAP:
            top = sorted(done, key=self.fitness, reverse=True)[:CAP // 2]
            ids = {id(t) for t in top}
            done = top + [t for t in reversed(done) if id(t) not in ids][:CAP // 2]
        if self._gp is None:
            self._gp, self._encoder = GP(), Encoder(self.space)
        x = self._encoder(np.stack([self.code(t.arch) for t in done]))
        y = np.array([self.fitness(t) for t in done])
        choose = len(history) // 10 != self._round
        try:
            self._gp.fit(x, y, choose=choose)
        except np.linalg.LinAlgError:
            return None
        self._round = len(history) // 10
        return self._gp

    def pick(self, history: Sequence[Trial], draw: Callable[[], Arch | None], is_new: Callable[[Arch], bool],
             feasible: Callable[[Arch], bool], screen: int, best_y: float, rng: np.random.Generator,
             explore: float = 0.0) -> Arch | None:
        """A pool of up to `screen` new archs - round(explore x screen) random feasible ones of the space,
        the rest children from `draw()` (2 x screen draws at most: a small space runs out of new
        children) - ranked by expected improvement over `best_y`; the first feasible one, else None."""
        gp = self.fit(history)
        if gp is None:
            return None
        children: dict[Arch, None] = dict.fromkeys(self.wild(int(round(explore * screen)), is_new, feasible, rng))
        for _ in range(2 * screen):
            child = draw()
            if child is not None and is_new(child):
                children[child] = None
                if len(children) >= screen:
                    break
        cand = list(children)
        if not cand:
            return None
        for j in gp.rank(self._encoder(np.stack([self.code(a) for a in cand])), best_y, rng):
            if feasible(cand[int(j)]):
                return cand[int(j)]
        return None

    def wild(self, k: int, is_new: Callable[[Arch], bool], feasible: Callable[[Arch], bool],
             rng: np.random.Generator) -> list[Arch]:
        """Up to `k` random new archs. A small space's are drawn from its enumerated pool
        (`surrogate.ArchPool`, prefiltered by latency in one batch) and checked feasible here (at most
        `_EXPLORE_TRIES` x k looked at); a large space's are k plain samples, left to `pick`'s feasibility
        check in ranked order like the children (rejection sampling would cost a latency prediction per
        draw, 5x the CPU of a whole search on the full DARTS space)."""
        if k <= 0:
            return []
        if self._pool is False:
            from nas.strategies.surrogate import ArchPool
            p = self.problem
            self._pool = ArchPool.build(self.space, p.models if p else None, p.bounds if p else None)
        pool = self._pool
        if pool is None:
            return [a for a in (self.space.sample(rng) for _ in range(k)) if is_new(a)]
        out: list[Arch] = []
        for i in rng.permutation(np.flatnonzero(pool.ok))[:_EXPLORE_TRIES * k]:
            arch = pool.arch(int(i))
            if arch is None or not is_new(arch):
                continue
            if not feasible(arch):
                pool.ok[int(i)] = False
                continue
            out.append(arch)
            if len(out) >= k:
                break
        return out
