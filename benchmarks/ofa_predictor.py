"""The `predictor` evaluator on held-out OFA-MobileNetV3 archs, next to a MACs-only baseline.

    python benchmarks/ofa_predictor.py [--folds 5] [--seed 0] [--bands 4]

Data: the shipped DyNAS-T rows (search_spaces/data/ofa_mbv3), grouped by canonical arch (2,162).
Two hold-outs:
- random: K-fold over archs (shuffled with --seed); every arch is predicted once, by a model that
  never saw it;
- leave-one-source-out (LOSO): for each DyNAS-T search (`source`), fit on the archs the other
  searches measured and predict the archs only that search measured (archs measured by it and by
  another search are in neither set).
Models: `gbt` and `ridge` (nas/evaluators/predictor.py) and `macs` (isotonic top-1 vs MACs, fitted
on the same training archs). Scores: Spearman and MAE (top-1 points) of the pooled held-out
predictions, overall and within bands of equal size of the archs' predicted Pixel 1 latency (the
`pixel1` target): at a fixed latency MACs rank far worse than over the whole range.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.evaluators.predictor import Sample, _space, fit_model, features, macs_baseline, samples  # noqa: E402

MODELS = ("gbt", "ridge", "macs")


def predict(name: str, train: list[Sample], test: list[Sample], seed: int) -> np.ndarray:
    if name == "macs":
        return macs_baseline(train).predict([s.macs for s in test])
    space = _space()
    reg = fit_model(space, train, name, seed)
    return reg.predict(np.stack([features(space, s.arch, name) for s in test]))


def random_split(data: list[Sample], folds: int, seed: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(data))
    out = {m: np.zeros(len(data)) for m in MODELS}
    for f in range(folds):
        test_idx = order[f::folds]
        test_set = set(test_idx.tolist())
        train = [data[i] for i in range(len(data)) if i not in test_set]
        for m in MODELS:
            out[m][test_idx] = predict(m, train, [data[i] for i in test_idx], seed)
    return out


def loso(data: list[Sample], seed: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[tuple[str, int, int]]]:
    """Indices of the held-out archs, their predictions per model, and (source, n train, n test)."""
    sources = sorted({s for d in data for s in d.sources})
    idx: list[int] = []
    preds: dict[str, list[float]] = {m: [] for m in MODELS}
    sizes = []
    for src in sources:
        train = [d for d in data if src not in d.sources]
        test_idx = [i for i, d in enumerate(data) if d.sources == (src,)]
        sizes.append((src, len(train), len(test_idx)))
        idx += test_idx
        for m in MODELS:
            preds[m] += predict(m, train, [data[i] for i in test_idx], seed).tolist()
    return np.array(idx), {m: np.array(v) for m, v in preds.items()}, sizes


def scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    return float(spearmanr(y, p).statistic), float(np.mean(np.abs(y - p)))


def table(title: str, y: np.ndarray, preds: dict[str, np.ndarray], lat: np.ndarray, edges: np.ndarray) -> None:
    print(f"\n{title}\n")
    head = " | ".join(f"{m} Spearman | {m} MAE" for m in MODELS)
    print(f"| archs | pixel1 ms | n | {head} |")
    print("|---|---|---:|" + "---:|" * (2 * len(MODELS)))
    groups = [("all", np.ones(len(y), bool))]
    for b in range(len(edges) - 1):
        hi = lat <= edges[b + 1] if b == len(edges) - 2 else lat < edges[b + 1]
        groups.append((f"band {b + 1}", (lat >= edges[b]) & hi))
    for name, mask in groups:
        cells = []
        for m in MODELS:
            rho, mae = scores(y[mask], preds[m][mask])
            cells.append(f"{rho:.3f} | {mae:.3f}")
        rng = f"{lat[mask].min():.1f}-{lat[mask].max():.1f}"
        print(f"| {name} | {rng} | {int(mask.sum())} | {' | '.join(cells)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bands", type=int, default=4, help="latency bands of equal size (4: quartiles)")
    args = ap.parse_args()
    from latency.targets import lut_model
    space = _space()
    data = samples()
    pixel1 = lut_model("pixel1", space)
    lat = np.array([pixel1.predict(d.arch) for d in data])
    y = np.array([d.top1 for d in data])
    edges = np.quantile(lat, np.linspace(0, 1, args.bands + 1))
    macs = [d.macs for d in data]
    print(f"{len(data)} archs (rows grouped by canonical arch), top-1 {y.min():.2f}-{y.max():.2f}%, "
          f"MACs {min(macs) / 1e6:.1f}-{max(macs) / 1e6:.1f}M, pixel1 {lat.min():.1f}-{lat.max():.1f} ms; "
          f"Spearman(top-1, MACs) over all archs {spearmanr(y, macs).statistic:.3f}")
    for name in ("gbt", "ridge"):   # what the evaluator does at first use: fit on every arch
        t0 = time.process_time()
        fit_model(space, data, name, args.seed)
        print(f"fit on all {len(data)} archs ({name}, features included): {time.process_time() - t0:.2f} CPU s")
    rs = random_split(data, args.folds, args.seed)
    table(f"Random {args.folds}-fold split (seed {args.seed}), pooled held-out predictions", y, rs, lat, edges)
    idx, lp, sizes = loso(data, args.seed)
    print("\nLOSO folds (source: train archs / held-out archs): "
          + "; ".join(f"{s}: {a} / {b}" for s, a, b in sizes))
    table("Leave-one-source-out, pooled held-out predictions (bands: the same pixel1 edges)", y[idx], lp, lat[idx],
          edges)
    print("\nLOSO per source (Spearman / MAE):")
    start = 0
    for src, _, n in sizes:
        sl = slice(start, start + n)
        print(f"  {src}: " + ", ".join(f"{m} {scores(y[idx][sl], lp[m][sl])[0]:.3f} / {scores(y[idx][sl], lp[m][sl])[1]:.3f}"
                                       for m in MODELS))
        start += n


if __name__ == "__main__":
    main()
