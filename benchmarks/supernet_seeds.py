"""Supernet variants over shared supernet seeds: Kendall vs stand-alone and vs truth, paired across seeds.

    python benchmarks/supernet_seeds.py --space nb201 --standalone n50_s0.json,n50_s1.json \
        --variant "uniform 12:u12_s0.json,u12_s1.json" --variant "fair 8:f8_s0.json,f8_s1.json" archs=50

Each `--variant NAME:FILE,...` lists `benchmarks/supernet_ranking.py --part supernet` outputs of one
setting, one per `supernet_seed`, in the same seed order for every variant (the pairing); the stand-alone
parts are shared. Extra `key=value` arguments are the RankingConfig the parts were made with (archs, dataset,
...; the draw of archs must match). Prints per-seed Kendall tau of supernet vs stand-alone (mean of the seeds)
and vs truth, each variant's mean, and for every pair of variants the paired mean difference with a paired
t-test (scipy), Holm-corrected over the number of pairs.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from nas.bench.ranking import correlate
from supernet_ranking import ranking_config   # this folder: `python benchmarks/supernet_seeds.py` puts it on the path


def _load(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def main() -> None:
    from scipy import stats
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="nb201", choices=("nats_sss", "nb201"))
    ap.add_argument("--standalone", required=True, help="stand-alone part files, comma-separated")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME:FILE,...")
    ap.add_argument("overrides", nargs="*", help="RankingConfig field=value of the parts")
    args = ap.parse_args()
    cfg = ranking_config(args.space, args.overrides)
    stand: dict[str, list[float]] = {}
    for path in args.standalone.split(","):
        for block, accs in _load(path)["standalone"].items():
            stand.setdefault(block, []).extend(accs)
    rows: dict[str, dict[str, list[float]]] = {}
    for spec in args.variant:
        name, _, files = spec.partition(":")
        rows[name] = {"standalone": [], "truth": []}
        for path in files.split(","):
            c = correlate(cfg, _load(path), stand)["correlations"]
            rows[name]["standalone"].append(c["supernet_vs_standalone"]["kendall"])
            rows[name]["truth"].append(c["supernet_vs_truth"]["kendall"])
    print("| variant | seeds | Kendall vs stand-alone, per seed | mean | Kendall vs truth, per seed | mean |")
    print("|---|---:|---|---:|---|---:|")
    for name, r in rows.items():
        print(f"| {name} | {len(r['standalone'])} | {', '.join(f'{v:.3f}' for v in r['standalone'])} | "
              f"{np.mean(r['standalone']):.3f} | {', '.join(f'{v:.3f}' for v in r['truth'])} | "
              f"{np.mean(r['truth']):.3f} |")
    pairs = list(itertools.combinations(rows, 2))
    for what in ("standalone", "truth"):
        tests = []
        for a, b in pairs:
            x, y = np.array(rows[a][what]), np.array(rows[b][what])
            if len(x) != len(y):
                raise SystemExit(f"variants {a!r} and {b!r} have {len(x)} and {len(y)} seeds: not paired")
            # one seed, or identical differences: no test (nan), said so below
            p = float(stats.ttest_rel(y, x).pvalue) if len(x) > 1 and np.ptp(y - x) > 0 else float("nan")
            tests.append((a, b, float(np.mean(y - x)), p))
        # Holm: the k-th smallest p times (m - k + 1), kept monotone
        tested = sorted((i for i in range(len(tests)) if not np.isnan(tests[i][3])), key=lambda i: tests[i][3])
        adjusted, running = [float("nan")] * len(tests), 0.0
        for rank, i in enumerate(tested):
            running = max(running, min(1.0, tests[i][3] * (len(tested) - rank)))
            adjusted[i] = running
        for (a, b, diff, p), p_holm in zip(tests, adjusted):
            test = (f"paired t over seeds: p {p:.3g}, Holm over {len(tested)} test(s) {p_holm:.3g}"
                    if not np.isnan(p) else "no test: fewer than 2 seeds")
            print(f"vs {what}: {b} - {a} = {diff:+.3f} Kendall ({test})")


if __name__ == "__main__":
    main()
