"""How well can any predictor rank a measured NB201 device? (the ceiling behind `nas bench latency`)

    python benchmarks/nb201_rank_ceiling.py [--devices pixel2,raspi4] [--gbm]

Per device, over all 15,625 NAS-Bench-201 archs:
- ties: distinct values and the Spearman between the measured times and a tie-broken order of them
  (the best any tie-free predictor can score when only the rounding to whole ms limits it);
- flexible models of the arch fitted on all archs, in-sample and 5-fold out-of-sample: least squares on
  one-hot edge ops (main effects), plus all pairwise edge interactions, the 21 devices outside HELP's
  six test devices as features, and with --gbm gradient-boosted trees on the ops. What these cannot
  reach with 15,625 training archs, no predictor calibrated on 10 archs will.
"""
from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from scipy.stats import rankdata, spearmanr

from latency.bench_devices import DEVICES, nb201_latency
from latency.bench_calibration import HELP_TEST_DEVICES
from search_spaces.catalog import get_space


def _onehot(genes: np.ndarray, order: int) -> np.ndarray:
    cols = []
    for combo in itertools.combinations(range(genes.shape[1]), order):
        key = np.zeros(len(genes), int)
        for e in combo:
            key = key * 5 + genes[:, e]
        cols.append(np.eye(5 ** order)[key])
    return np.hstack(cols)


def _scores(fit_predict, f: np.ndarray, y: np.ndarray, fold: np.ndarray) -> tuple[float, float]:
    inside = spearmanr(fit_predict(f, y, f), y)[0]
    out = np.empty(len(y))
    for k in range(5):
        tr = fold != k
        out[~tr] = fit_predict(f[tr], y[tr], f[~tr])
    return float(inside), float(spearmanr(out, y)[0])


def _lstsq(f: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    return g @ np.linalg.lstsq(f, y, rcond=None)[0]


def _gbm(f: np.ndarray, y: np.ndarray, g: np.ndarray) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor
    return HistGradientBoostingRegressor(max_iter=300, categorical_features=list(range(6)),
                                         random_state=0).fit(f, y).predict(g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="pixel2,raspi4")
    ap.add_argument("--gbm", action="store_true", help="also gradient-boosted trees (scikit-learn)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    data, space = nb201_latency(), get_space("nb201")
    blocks = sorted(data.index, key=data.index.__getitem__)
    genes = np.array([space.encode(space.parse(b)) for b in blocks])
    main_fx = np.hstack([np.ones((len(blocks), 1)), _onehot(genes, 1)])
    pairs = np.hstack([main_fx, _onehot(genes, 2)])
    fold = np.random.default_rng(0).integers(0, 5, len(blocks))
    for d in args.devices.split(","):
        y = np.array([data.ms[d][b] for b in blocks])
        others = [o for o in DEVICES if o not in HELP_TEST_DEVICES and o != d]
        ref = np.column_stack([np.ones(len(y))] + [[data.ms[o][b] for b in blocks] for o in others])
        tie = np.corrcoef(rankdata(y), rankdata(y, method="ordinal"))[0, 1]
        print(f"{d}: {len(np.unique(y))} distinct values, tie ceiling {tie:.4f}")
        models = [("edge ops", main_fx, _lstsq), ("edge ops + pairs", pairs, _lstsq),
                  (f"{len(others)} devices", ref, _lstsq),
                  (f"{len(others)} devices + pairs", np.hstack([ref, pairs]), _lstsq)]
        if args.gbm:
            models.append(("gbm on ops", genes, _gbm))
        for name, f, fn in models:
            inside, out = _scores(fn, f, y, fold)
            print(f"  {name:<24} in-sample {inside:.4f}   5-fold {out:.4f}")
    print(f"time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
