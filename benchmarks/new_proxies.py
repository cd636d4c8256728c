"""MeCo and SWAP (and every other proxy) on every ground-truth space, next to their papers' claims.

    python benchmarks/new_proxies.py [--archs 150] [--settings nb201/cifar10,nasnet/nb301] [--proxies a,b]
                                     [--json out.json]

Runs `nas.bench.proxies.proxy_ranking` (what `nas bench proxies` prints) on each setting: nb201 with
its three truths (NASLib's 725 archs), nats_sss (CIFAR-10) and nasnet -o variant=darts against NB301
(NASLib's 725 cells, nets at 32 channels / 8 cells), a seeded sample of `--archs` archs each, the proxy
batch from the embedded digits set. Prints one row per setting: every proxy's Spearman, the best one,
and the claims (MeCo 0.89 on NB201 CIFAR-10; SWAP 0.90 on NB201 CIFAR-100, regularised).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.bench.proxies import CLAIMED_SPEARMAN, format_ranking, proxy_ranking

SETTINGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "nb201/cifar10": ("nb201", "cifar10", {}), "nb201/cifar100": ("nb201", "cifar100", {}),
    "nb201/ImageNet16-120": ("nb201", "ImageNet16-120", {}), "nats_sss/cifar10": ("nats_sss", "cifar10", {}),
    "nasnet/nb301": ("nasnet", "nb301", {"variant": "darts"})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", type=int, default=150)
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, of: " + ", ".join(SETTINGS))
    ap.add_argument("--proxies", help="default: all registered proxies")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    results = {}
    for key in args.settings.split(","):
        space, truth, opts = SETTINGS[key]
        t0 = time.process_time()
        r = proxy_ranking(space, truth=truth, archs=args.archs, seed=args.seed, space_options=opts,
                          proxies=args.proxies.split(",") if args.proxies else None)
        r["cpu_seconds"] = time.process_time() - t0
        results[key] = r
        print(format_ranking(r), f"\ncpu: {r['cpu_seconds']:.0f} s\n", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results, fh, indent=1)
    print(f"{'setting':<22} {'archs':>5} {'meco':>6} {'swap':>6} {'best (ours)':>22} {'claims'}")
    for key, r in results.items():
        sp = {n: e["spearman"] for n, e in r["proxies"].items()}
        best = max(sp, key=lambda n: sp[n] if sp[n] == sp[n] else -2)
        claims = CLAIMED_SPEARMAN.get((r["space"], r["truth"]), {})
        claim = ", ".join(f"{n} {claims[n]:.2f}" for n in ("meco", "swap") if n in claims) or "-"
        print(f"{key:<22} {r['archs']:>5} {sp.get('meco', float('nan')):>6.3f} {sp.get('swap', float('nan')):>6.3f} "
              f"{best + f' {sp[best]:.3f}':>22} {claim}")


if __name__ == "__main__":
    main()
