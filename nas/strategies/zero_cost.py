"""`zero-cost`: regularized evolution warmed up by a training-free proxy.

    nas search --strategy zero-cost --strategy-option pool=200 --strategy-option proxy=synflow \
               --evaluator train --evaluator-option epochs=2

The "zero-cost warmup" of Abdelfattah et al. 2021: before any real evaluation, `pool`
feasible archs are sampled (with the strategy's seed) and scored by a zero-cost proxy - seconds
each instead of a training run. The first `population` trials evaluate the pool's best archs in
proxy order, so aging evolution starts from a population that the proxy already picked; after
that the strategy is regularized evolution over the real metric. The pool and its ranking depend
only on the seed, so a resumed search recomputes the same ranking and continues where it was.
With `--evaluator zero-cost` as well, this is simply "evaluate the proxy's top picks first".
"""
from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.strategies.evolution import RegularizedEvolution

log = logging.getLogger(__name__)
#: proxy scores by (space, proxy settings, seed, arch): the proxy evaluator is deterministic, so
#: strategies built again in one process (resumes, repeated benchmark runs) reuse the scores
_SCORES: dict[tuple[str, str, Arch], float] = {}
_MAX_CACHED = 200_000


class ZeroCostWarmup(RegularizedEvolution):
    name = "zero-cost"

    def __init__(self, space, *, pool: int = 100, proxy: str = "synflow", proxy_resolution: int | None = 64,  # type: ignore[no-untyped-def]
                 proxy_batch: int = 16, dataset: str | None = None, members: str | Sequence[str] | None = None,
                 progress: bool | None = None, **kwargs: Any) -> None:
        from nas.evaluators.zero_cost import ZeroCostEvaluator
        super().__init__(space, **kwargs)
        if int(pool) < 1:
            raise UsageError(f"zero-cost pool must hold at least 1 arch, got {pool}")
        self.pool_size, self.progress = int(pool), progress
        self.proxy = ZeroCostEvaluator(space, seed=self.seed, proxy=proxy, batch=proxy_batch,
                                       resolution=proxy_resolution, dataset=dataset, members=members)
        self._cache_key = repr((proxy, proxy_resolution, proxy_batch, dataset, self.proxy.members, self.seed))
        self._ranked: list[tuple[Arch, float]] | None = None

    def ranked_pool(self) -> list[tuple[Arch, float]]:
        """The pool's feasible archs with their proxy scores, best first (computed once)."""
        if self._ranked is None:
            from tqdm import tqdm
            rng = np.random.default_rng([self.seed, 0x2E80])
            archs: list[Arch] = []
            for _ in range(self.pool_size * 50):
                if len(archs) == self.pool_size:
                    break
                a = self.space.sample(rng)
                if a not in archs and self.feasible(a):
                    archs.append(a)
            t0 = time.perf_counter()
            scores = []
            for a in tqdm(archs, desc=f"zero-cost pool ({self.proxy.proxy_name})", unit="arch", leave=False,
                          disable=None if self.progress is None else not self.progress):
                scores.append(self._score(a))
            order = sorted(range(len(archs)), key=lambda i: (-scores[i], i))
            self._ranked = [(archs[i], scores[i]) for i in order]
            log.info("scored a pool of %d archs with %s in %.1f s", len(archs), self.proxy.proxy_name,
                     time.perf_counter() - t0)
        return self._ranked

    def _score(self, arch: Arch) -> float:
        key = (self.space.describe(), self._cache_key, arch)
        if key not in _SCORES:
            if len(_SCORES) >= _MAX_CACHED:
                _SCORES.clear()
            _SCORES[key] = float(self.proxy(arch)["score"])
        return _SCORES[key]

    def ask(self) -> Arch:
        arch = None
        if len(self.history) < self.population:
            arch = next((a for a, _ in self.ranked_pool() if self.is_new(a)), None)
        arch = arch or super().ask()
        self.mark_asked(arch)   # also when called without a runner
        return arch
