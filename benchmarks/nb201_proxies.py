"""Zero-cost proxies against NAS-Bench-201 / NATS ground truth, next to NASLib's and published figures.

    python benchmarks/nb201_proxies.py [--space nb201] [--truth cifar10] [--archs N] [--proxies a,b] [--dataset digits]

A thin wrapper of `nas.bench.proxies.proxy_ranking` (the same as `nas bench proxies`): prints per
proxy our Spearman / Kendall with the ground truth, NASLib's own score's Spearman on the same archs,
Abdelfattah et al.'s published Spearman (all 15,625 archs), and for the data-free proxies the
per-arch Spearman between our value and NASLib's.
"""
from __future__ import annotations

import argparse
import json
import time

from nas.bench.proxies import format_ranking, proxy_ranking


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="nb201")
    ap.add_argument("--truth", default="cifar10")
    ap.add_argument("--archs", type=int)
    ap.add_argument("--proxies")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    result = proxy_ranking(args.space, truth=args.truth, dataset=args.dataset, archs=args.archs,
                           proxies=args.proxies.split(",") if args.proxies else None, seed=args.seed, progress=True)
    result["seconds"] = time.perf_counter() - t0
    print(format_ranking(result))
    print(f"time: {result['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
