"""A Gaussian-process predictor on arch encodings and the pool of archs it ranks (predictor-guided search).

`Encoder` turns choice codes (`SearchSpace.encode`) into features: a one-hot block per decision and,
for decisions whose choices are numbers (channels, kernel sizes, depths), the choice's value scaled to
[0, 1], so that 48 channels is nearer 56 than 8. Squared feature distances are normalised so that one
categorical gene changed adds 1/decisions, a numeric gene moved across its whole range 1.25/decisions.

`GP` is exact GP regression with a squared-exponential kernel on those features (standardised targets,
unit signal variance); its length scale and noise are picked from a small grid by the log marginal
likelihood. `expected_improvement` is the acquisition. Cost: one Cholesky of the (capped) training set
per fit and one kernel row block per ranked pool arch, so the work per trial is bounded.

`ArchPool` is what a strategy ranks: the whole space when it is small (a candidate list, or at most
`ENUMERATE` genotypes) with a vectorised latency prefilter when the problem's models offer
`predict_codes`, else None (the strategy draws a fresh pool of samples and mutations per ask).
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Mapping

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.space import SearchSpace

#: spaces of at most this many genotypes are enumerated into one pool
ENUMERATE = 50_000
#: (length scale^2, noise variance) candidates, on normalised distances and standardised targets
GRID: tuple[tuple[float, float], ...] = tuple(itertools.product((0.02, 0.05, 0.1, 0.2, 0.5), (1e-3, 1e-2, 0.1)))


#: latency of every pool arch per (space, options, target, model type): a model that prices archs one by one
#: (a non-separable space) takes seconds for 32,768 archs; searches of one process share the result
_LATENCY: dict[tuple[str, str, str, str], np.ndarray] = {}


def _numeric(choices: tuple[Any, ...]) -> np.ndarray | None:
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices) and len(set(choices)) > 1:
        v = np.asarray(choices, dtype=np.float64)
        return (v - v.min()) / (v.max() - v.min())
    return None


class Encoder:
    """Choice codes (N x decisions) -> features (N x F); see the module doc."""

    def __init__(self, space: SearchSpace) -> None:
        self.sizes = [len(d.choices) for d in space.decisions]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.ordinal = [_numeric(tuple(d.choices)) for d in space.decisions]
        n = len(self.sizes)
        # squared distance of a changed categorical gene: 2 * w^2 = 1; a numeric one: 2 * w^2 = 0.25, + range^2
        self.weights = np.array([math.sqrt(0.125) if o is not None else math.sqrt(0.5) for o in self.ordinal])
        self.width = int(sum(self.sizes)) + sum(o is not None for o in self.ordinal)
        self.scale = 1.0 / math.sqrt(n)

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        out = np.zeros((len(codes), self.width))
        rows = np.arange(len(codes))
        for i, off in enumerate(self.offsets):
            out[rows, off + codes[:, i]] = self.weights[i]
        col = int(sum(self.sizes))
        for i, o in enumerate(self.ordinal):
            if o is not None:
                out[:, col] = o[codes[:, i]]
                col += 1
        return out * self.scale


class GP:
    """Exact GP regression, squared-exponential kernel; hyperparameters from `GRID` by marginal likelihood."""

    def __init__(self, grid: tuple[tuple[float, float], ...] = GRID) -> None:
        self.grid = grid
        self.hyper: tuple[float, float] | None = None

    @staticmethod
    def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.maximum(d, 0.0)

    def fit(self, x: np.ndarray, y: np.ndarray, choose: bool = True) -> "GP":
        """Fit to features `x` and targets `y`; `choose`: pick the hyperparameters again (else keep them)."""
        from scipy.linalg import cho_solve
        self.mean, self.std = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.mean) / self.std
        d = self._sqdist(x, x)
        best: tuple[float, Any] | None = None
        options = self.grid if choose or self.hyper is None else (self.hyper,)
        for ell2, noise in options:
            k = np.exp(-d / (2.0 * ell2)) + (noise + 1e-8) * np.eye(len(x))
            try:
                chol = np.linalg.cholesky(k)
            except np.linalg.LinAlgError:
                continue
            alpha = cho_solve((chol, True), z, check_finite=False)
            lml = -0.5 * float(z @ alpha) - float(np.log(np.diag(chol)).sum())
            if best is None or lml > best[0]:
                best = (lml, (ell2, noise, chol, alpha))
        if best is None:
            raise np.linalg.LinAlgError("no kernel of the grid is positive definite on these points")
        ell2, noise, self.chol, self.alpha = best[1]
        self.hyper, self.x = (ell2, noise), x
        return self

    def _kernel(self, xs: np.ndarray) -> np.ndarray:
        assert self.hyper is not None
        return np.exp(-self._sqdist(xs, self.x) / (2.0 * self.hyper[0]))

    def predict(self, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (in target units) at features `xs`."""
        from scipy.linalg import solve_triangular
        ks = self._kernel(xs)
        mu = ks @ self.alpha
        v = solve_triangular(self.chol, ks.T, lower=True, check_finite=False)
        var = np.maximum(1.0 - (v * v).sum(0), 1e-12)
        return self.mean + self.std * mu, self.std * np.sqrt(var)

    def rank(self, xs: np.ndarray, best: float, rng: np.random.Generator, keep: int = 400) -> np.ndarray:
        """Indices of `xs` by expected improvement over `best`, highest first. With more than 2 x `keep`
        rows the variance (the costly part) is computed for the `keep` of highest mean and `keep` random
        others only; the rest follow in order of mean."""
        if len(xs) <= 2 * keep:
            mu, sd = self.predict(xs)
            return np.argsort(-expected_improvement(mu, sd, best), kind="stable")
        mu = self.mean + self.std * (self._kernel(xs) @ self.alpha)
        by_mean = np.argsort(-mu, kind="stable")
        others = rng.choice(by_mean[keep:], size=keep, replace=False)
        chosen = np.concatenate([by_mean[:keep], others])
        m, sd = self.predict(xs[chosen])
        first = chosen[np.argsort(-expected_improvement(m, sd, best), kind="stable")]
        rest = np.setdiff1d(by_mean, chosen, assume_unique=True)
        return np.concatenate([first, rest[np.argsort(-mu[rest], kind="stable")]])


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """EI over `best` for maximisation."""
    from scipy.special import ndtr
    z = (mu - best) / sd
    return sd * (z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi))


class ArchPool:
    """Every arch of a small space as codes, with a feasibility mask (prefiltered by latency when possible)."""

    def __init__(self, space: SearchSpace, codes: np.ndarray, archs: list[Any] | None) -> None:
        self.space, self.codes = space, codes
        self.archs: list[Any] = archs if archs is not None else [None] * len(codes)
        self.ok = np.ones(len(codes), dtype=bool)     # not known to be invalid or infeasible
        self.index: dict[Any, int] = {a: i for i, a in enumerate(self.archs) if a is not None}

    @classmethod
    def build(cls, space: SearchSpace, models: Mapping[str, Any] | None = None,
              bounds: Mapping[str, float] | None = None) -> "ArchPool | None":
        candidates = getattr(space, "_candidates", None)
        if candidates is not None:
            archs = list(candidates.archs)
            pool = cls(space, np.stack([space.encode(a) for a in archs]), archs)
        elif space.size() <= ENUMERATE:
            grids = np.meshgrid(*[np.arange(len(d.choices)) for d in space.decisions], indexing="ij")
            pool = cls(space, np.stack([g.ravel() for g in grids], 1).astype(np.int64), None)
        else:
            return None
        for target, bound in (bounds or {}).items():
            model = (models or {}).get(target)
            if model is None or not hasattr(model, "predict_codes"):
                continue
            key = (space.name, repr(sorted(space.options().items())), str(target), type(model).__name__)
            lat = _LATENCY.get(key)
            if lat is None:
                try:
                    lat = np.asarray(model.predict_codes(pool.codes), dtype=np.float64)
                except Exception:   # noqa: BLE001 - a model that cannot batch these codes: check per arch
                    continue
                if len(_LATENCY) >= 8:
                    _LATENCY.pop(next(iter(_LATENCY)))
                _LATENCY[key] = lat
            pool.ok &= lat <= bound
        return pool

    def arch(self, i: int) -> Any:
        """The arch at index i (decoded on first use); None, and masked out, when the codes are invalid."""
        from nas.core.errors import ArchError
        if self.archs[i] is None and self.ok[i]:
            try:
                self.archs[i] = self.space.decode(self.codes[i])
                self.index[self.archs[i]] = i
            except ArchError:
                self.ok[i] = False
        return self.archs[i]
