"""GP screening of evolution's children (`RegularizedEvolution(screen=...)`).

On problems without latency tables (a non-separable space or model, e.g. the ground-truth
benchmarks, whose accuracy is no sum over layers) each ask draws up to `screen` children and keeps
the feasible new one of highest expected improvement under a Gaussian process on the arch
encodings (`nas.strategies.surrogate`) fitted to the history. The training set is capped at
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


class Screen:
    """The GP state of one strategy: its encoder, per-arch codes and when it last chose hyperparameters."""

    def __init__(self, space: Any, fitness: Callable[[Trial], float]) -> None:
        self.space, self.fitness = space, fitness
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
             feasible: Callable[[Arch], bool], screen: int, best_y: float, rng: np.random.Generator) -> Arch | None:
        """Up to `screen` new children from `draw()` (2 x screen draws at most: a small space runs out of
        new children), ranked by expected improvement over `best_y`; the first feasible one, else None."""
        gp = self.fit(history)
        if gp is None:
            return None
        children: dict[Arch, None] = {}
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
