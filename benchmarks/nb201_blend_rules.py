"""Blend rules for few-shot calibration, each fixed in advance, scored leave-device-out on the 27 NB201 devices.

    python benchmarks/nb201_blend_rules.py device 5,10     # or: kind 10   (kind 10: 39 s CPU; device 5,10: 9 min wall at load 19)

For every device and n, 5 draws of n measured nets (seed 0); the families of latency/calibrate_select.py
are fitted on the n nets only, then blended by each rule: `cur` (the shipped rule, weights
1/(cv+0.001)^2), `rank_w2` (the same weights on each family's ranks), `log_w2` (on log ms), `w1`
(1/(cv+0.001)), `exp_n` (exp(-(cv/cv_min - 1) n / 2)), `top3` (plain mean of the 3 smallest cv) and
`best` (smallest cv). Spearman against all 15,625 archs. Result (issue 24, stop 32; the draws differ
from `nas bench latency`'s): every rule within 0.004 of `cur` in mean at n=5 and 10, pixel2 at n=10
0.884-0.893 under all of them (ceiling 0.906, benchmarks/nb201_rank_ceiling.py); `kind 10`: means
0.952-0.958, pixel2 0.890-0.897. No rule is adopted.
"""
import sys

import numpy as np
from scipy.stats import rankdata
from latency.bench_calibration import _Data, basis_for, _spearman
from latency.calibrate_select import fit_blend
from latency.bench_devices import DEVICES
leave = sys.argv[1]; sizes = [int(s) for s in sys.argv[2].split(',')]
data = _Data(); rng = np.random.default_rng(0)
def rules(blend, preds, n):
    fams = blend.families; cv = np.array(blend.cv_errors); P = np.array([preds[f] for f in fams])
    out = {}
    w2 = 1/(cv+0.001)**2; w2 /= w2.sum()
    out['cur'] = w2 @ P
    R = np.array([rankdata(p) for p in P])
    out['rank_w2'] = w2 @ R
    out['log_w2'] = w2 @ np.log(np.maximum(P, 1e-6))
    w1 = 1/(cv+0.001); w1 /= w1.sum()
    out['w1'] = w1 @ P
    # shrink: weights ~ exp(-(cv/cvmin - 1) * n / 2)  (relative cv, sharper with more nets)
    ws = np.exp(-(cv/cv.min()-1)*n/2); ws/=ws.sum(); out['exp_n'] = ws @ P
    # top-3 equal
    top = np.argsort(cv)[:3]; out['top3'] = P[top].mean(0)
    out['best'] = P[np.argmin(cv)]
    return out
res = {}
for d in DEVICES:
    basis = basis_for(d, leave); y = data.col(d); ref = np.column_stack([data.col(b) for b in basis])
    for n in sizes:
        acc = {}
        for _ in range(5):
            idx = rng.choice(len(y), size=n, replace=False)
            b = fit_blend({g: x[idx] for g, x in data.xs.items()}, data.counts[idx], y[idx], ref[idx], data.columns)
            preds = b.family_predictions(data.xs, data.counts, ref)
            for k, p in rules(b, preds, n).items():
                acc.setdefault(k, []).append(_spearman(p, y))
        res.setdefault(str(n), {})[d] = {k: float(np.mean(v)) for k, v in acc.items()}
    print(d, {n: {k: round(v, 3) for k, v in res[str(n)][d].items()} for n in map(str, sizes)}, flush=True)
for n in map(str, sizes):
    ks = res[n][list(DEVICES)[0]].keys()
    print('n', n, 'mean', {k: round(np.mean([res[n][d][k] for d in DEVICES]), 4) for k in ks})
    print('n', n, 'worst', {k: round(min(res[n][d][k] for d in DEVICES), 4) for k in ks})
    print('n', n, 'phones', {k: [round(res[n][d][k], 3) for d in ('pixel2','samsung_s7','essential_ph_1')] for k in ks})
