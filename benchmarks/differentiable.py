"""Differentiable and weight-sharing search on a small dataset: time, accuracy, found latency.

    python benchmarks/differentiable.py [--dataset digits] [--target pixel1] [--latency-ms 80 45]
                                        [--strategies single-path darts] [--epochs N] [--threads N]

Runs `nas search` (the Python entry point) once per strategy and latency bound: single-path on the
MBConv space (trained at 32x32, width 0.25, the bound is also its latency target), darts on the
nasnet darts variant (searched at 16x16 with 8 channels, the derived cell retrained for 2 epochs),
and optionally supernet (sandwich training + 50 evolution trials). Prints one row per run: wall
time, validation accuracy of the found arch, its predicted latency on the target (the full-size
space: MBConv at 224x224 / NASNet at 32x32, where a table exists) and the arch.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from nas import SearchConfig, search

SETTINGS: dict[str, dict[str, Any]] = {
    "single-path": {"space": "mbconv", "space_options": {}, "trials": 1},
    "supernet": {"space": "mbconv", "space_options": {}, "trials": 50},
    "darts": {"space": "nasnet", "space_options": {"variant": "darts"}, "trials": 1},
}


def run(strategy: str, args: argparse.Namespace, bound: float | None) -> dict[str, Any]:
    s = SETTINGS[strategy]
    opts: dict[str, Any] = {"dataset": args.dataset}
    if args.epochs:
        opts["epochs"] = args.epochs
    target = args.target
    if strategy == "darts" and target == "pixel1":   # no shipped table for the darts variant: the pixel1 model's
        import tempfile

        from latency.devices.pixel1 import build_table
        from search_spaces.catalog import get_space
        path = Path(tempfile.mkdtemp()) / "darts-pixel1.json"
        target = str(build_table(get_space(s["space"], **s["space_options"])).save(path))
    cfg = SearchConfig(space=s["space"], space_options=s["space_options"], targets=(target,),
                       latency_ms=(bound,) if bound is not None else (), strategy=strategy, strategy_options=opts,
                       trials=s["trials"], seed=args.seed)
    t0 = time.perf_counter()
    result = search(cfg, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    summ = result.summary
    train = summ.get("training", {})
    return {"strategy": strategy, "bound_ms": bound, "seconds": round(seconds, 1),
            "train_seconds": round(float(train.get("seconds", 0.0)), 1),
            "accuracy": summ.get("metrics", {}).get("accuracy"), "latency_ms": summ.get("latency_ms"),
            "trials": summ["trials"], "arch": summ.get("arch"), "train_space": train.get("train_space")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--target", default="pixel1")
    ap.add_argument("--latency-ms", type=float, nargs="+", default=[80.0, 45.0],
                    help="bounds for single-path / supernet (one run each)")
    ap.add_argument("--strategies", nargs="+", default=["single-path", "darts"], choices=sorted(SETTINGS))
    ap.add_argument("--epochs", type=int, help="training epochs (default: each strategy's own)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; use 1 on a busy machine - "
                                                 "oversubscribed threads spin and slow training many times)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for strategy in args.strategies:
        bounds: list[float | None] = [None] if strategy == "darts" else list(args.latency_ms)
        for bound in bounds:
            rows.append(run(strategy, args, bound))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"dataset={args.dataset} target={args.target} seed={args.seed} torch threads={torch.get_num_threads()}")
    print(f"{'strategy':<12} {'bound ms':>8} {'found ms':>8} {'val acc':>7} {'train s':>7} {'total s':>7}  arch")
    for r in rows:
        bound = f"{r['bound_ms']:.1f}" if r["bound_ms"] is not None else "-"
        lat = f"{r['latency_ms']:.1f}" if r["latency_ms"] is not None else "-"
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        print(f"{r['strategy']:<12} {bound:>8} {lat:>8} {acc:>7} {r['train_seconds']:>7.1f} {r['seconds']:>7.1f}  "
              f"{r['arch']}")


if __name__ == "__main__":
    main()
