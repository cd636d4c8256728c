"""The `predictor` evaluator: ImageNet top-1 of an `ofa_mbv3` arch, predicted by a model fitted on the
shipped ground truth (search_spaces/data/ofa_mbv3: 2,373 DyNAS-T measurements of OFA sub-networks).

    nas search --space ofa_mbv3 --target pixel1 --latency-ms 79 --evaluator predictor

The model is fitted at first use, deterministically (fixed seed), and kept for the process: nothing
is downloaded or shipped besides the CSV. Rows are grouped by canonical arch (a block string; OFA's
encoding carries don't-care values in skipped slots) and their top-1 averaged: 2,162 archs.

Features of an arch (`features`): per block slot its kernel and expansion (0 when skipped), the five
stage depths, and the net's MACs and params (from the space's layer specs, as DyNAS-T counts them).
Models: `gbt` (default; scikit-learn gradient-boosted trees) or `ridge` (ridge regression on one-hot
tokens + log MACs). `benchmarks/ofa_predictor.py` judges both on held-out rows next to a MACs-only
baseline (`macs_baseline`: isotonic top-1 vs MACs).

Training range, checked, never extrapolated silently: only the `ofa_mbv3` space, at resolution 224
and 1,000 classes (the rows' setting), and archs whose MACs lie within the rows' MACs range. Anything
else is a UsageError naming the bad value: one line, exit 2 from the CLI (a failed trial in a search).
The upper end of the MACs range is declared as `valid_bounds`, so a search adds it as a constraint
(`macs_m<=506.5`): evolution's repair and fill stay under it even when the latency bound is loose.

Metrics: `score` and `accuracy` (the predicted top-1, %), `imagenet_top1_pred`, `params_m`, `macs_m`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    from search_spaces.ofa_data import OFARow

SPACE = "ofa_mbv3"
MODELS = ("gbt", "ridge")
DATASETS = ("imagenet",)
#: the setting of every training row (DyNAS-T evaluated at 224 px, ImageNet-1k)
TRAIN_OPTIONS: dict[str, int] = {"resolution": 224, "num_classes": 1000}


@dataclass(frozen=True)
class Sample:
    """One canonical arch of the ground truth: its arch, mean top-1, MACs and the sources measuring it."""

    arch: Arch
    top1: float
    macs: int
    params: int
    sources: tuple[str, ...]


def _space() -> SearchSpace:
    from search_spaces.catalog import get_space
    return get_space(SPACE, **TRAIN_OPTIONS)


def samples(rows: "Sequence[OFARow] | None" = None) -> list[Sample]:
    """The rows grouped by canonical arch (first-seen order), top-1 averaged over repeats."""
    from search_spaces.ofa_data import ofa_rows
    space = _space()
    groups: dict[Arch, list["OFARow"]] = {}
    for row in (ofa_rows() if rows is None else rows):
        groups.setdefault(space.from_ofa(row.ks, row.e, row.d), []).append(row)
    return [Sample(a, float(np.mean([r.top1 for r in g])), g[0].macs, g[0].params,
                   tuple(sorted({r.source for r in g}))) for a, g in groups.items()]


def features(space: SearchSpace, arch: Arch, model: str = "gbt") -> np.ndarray:
    """The feature vector of `arch` for `model` (see the module docstring)."""
    from search_spaces.op_params import arch_size
    params, macs = arch_size(space, arch)
    if model == "ridge":
        genes = space.canonical(arch).genes   # type: ignore[attr-defined]
        onehot = [np.eye(len(d.choices))[d.choices.index(g)] for g, d in zip(genes, space.decisions)]
        return np.concatenate([*onehot, [np.log(macs), np.log(params)]])
    ks, es, d = space.to_ofa(arch)   # type: ignore[attr-defined]   (canonical: skips end each stage)
    active = [j < d[i // 4] for i, j in ((i, i % 4) for i in range(len(ks)))]
    return np.array([k if a else 0 for k, a in zip(ks, active)] + [e if a else 0 for e, a in zip(es, active)]
                    + list(d) + [macs / 1e6, params / 1e6], dtype=float)


def fit_model(space: SearchSpace, train: Sequence[Sample], model: str = "gbt", seed: int = 0) -> Any:
    """A fitted scikit-learn regressor of top-1 on `features` (deterministic for a seed)."""
    x = np.stack([features(space, s.arch, model) for s in train])
    y = np.array([s.top1 for s in train])
    if model == "gbt":
        from sklearn.ensemble import GradientBoostingRegressor
        reg = GradientBoostingRegressor(n_estimators=500, learning_rate=0.03, max_depth=3, subsample=0.8,
                                        min_samples_leaf=5, random_state=seed)
    elif model == "ridge":
        from sklearn.linear_model import Ridge
        reg = Ridge(alpha=1.0)
    else:
        raise UsageError(f"unknown predictor model {model!r}; valid models: {', '.join(MODELS)}")
    return reg.fit(x, y)


def macs_baseline(train: Sequence[Sample]) -> Any:
    """The MACs-only baseline: isotonic (monotone) regression of top-1 on MACs."""
    from sklearn.isotonic import IsotonicRegression
    return IsotonicRegression(out_of_bounds="clip").fit([s.macs for s in train], [s.top1 for s in train])


@cache
def _fitted(model: str, seed: int) -> tuple[Any, tuple[int, int]]:
    """The model fitted on every shipped arch, and the MACs range it was fitted on (cached per process)."""
    space, data = _space(), samples()
    macs = [s.macs for s in data]
    return fit_model(space, data, model, seed), (min(macs), max(macs))


class PredictorEvaluator:
    """`Arch -> {score, accuracy, imagenet_top1_pred}`: predicted ImageNet top-1 (%) of an ofa_mbv3 arch."""

    def __init__(self, space: SearchSpace, model: str = "gbt", seed: int = 0) -> None:
        if space.name != SPACE:
            raise UsageError(f"the predictor evaluator has ground truth for space {SPACE!r} only, not "
                             f"{space.name!r}; use --evaluator zero-cost, train or tabular there")
        options = space.options()
        for key, value in TRAIN_OPTIONS.items():
            if options.get(key) != value:
                raise UsageError(f"the predictor was fitted on {SPACE} archs at {key}={value} only; {key}="
                                 f"{options.get(key)} is outside its training range (drop -o {key})")
        if model not in MODELS:
            raise UsageError(f"unknown predictor model {model!r}; valid models: {', '.join(MODELS)}")
        self.space, self.model_name, self.seed = space, model, int(seed)
        self.model, self.macs_range = _fitted(model, self.seed)
        #: the search keeps to the rows' MACs (a constraint, nas.evaluators.base): no child is grown past them
        self.valid_bounds = {"macs_m": self.macs_range[1] / 1e6}
        candidates = getattr(space, "_candidates", None)
        for arch in (candidates.archs if candidates is not None else ()):
            self._check(arch)

    def _check(self, arch: Arch) -> int:
        macs = self.space.macs(arch)
        lo, hi = self.macs_range
        if not lo <= macs <= hi:
            raise UsageError(f"{SPACE} arch {self.space.format(arch)!r} has {macs / 1e6:.1f}M MACs, outside the "
                             f"predictor's training range {lo / 1e6:.1f}-{hi / 1e6:.1f}M MACs; no prediction")
        return macs

    def __call__(self, arch: Arch) -> dict[str, float]:
        from search_spaces.op_params import arch_size
        self.space.validate(arch)
        macs = self._check(arch)
        top1 = float(self.model.predict(features(self.space, arch, self.model_name)[None, :])[0])
        params, _ = arch_size(self.space, arch)
        return {"score": top1, "accuracy": top1, "imagenet_top1_pred": top1, "params_m": params / 1e6,
                "macs_m": macs / 1e6}


def make_predictor(space: SearchSpace, seed: int = 0, **options: Any) -> PredictorEvaluator:
    valid = ("model", "dataset")
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(f"predictor evaluator has no option {bad[0]!r}; valid options: {', '.join(valid)}")
    dataset = options.get("dataset") or DATASETS[0]
    if str(dataset).lower() not in DATASETS:
        raise UsageError(f"the predictor has ground truth for dataset {', '.join(DATASETS)} only, not {dataset!r}")
    # the fit's seed is fixed (0): the search seed must not change what accuracy an arch is predicted to have
    return PredictorEvaluator(space, model=str(options.get("model", "gbt")))
