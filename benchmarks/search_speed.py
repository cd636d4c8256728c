"""Trials per second of a whole search: the CLI (a fresh `nas search` process, start-up included) and
`nas.search()` (in this process), with the default SQLite store and with `--storage jsonl:`.

    python benchmarks/search_speed.py [--trials 500] [--rounds 3] [--evaluator-option proxy=flops]

Problem: mbconv, `xeon-2.8ghz` table, latency <= 8 ms, the default strategy (evolution), zero-cost
evaluator with the given options (`proxy=flops`: a cheap evaluator that builds no net; pass
`--evaluator-option ''` for the default zero-cost proxy). The four runs are interleaved round by
round so that machine load hits them alike, and each run's CPU time (user + system, the child's for
the CLI) is reported beside its wall time: on a shared machine the wall clock mostly measures the
other jobs, the CPU clock what the search costs. Figures are medians over rounds; the ratios (SQLite
/ jsonl, CLI / search()) are what to compare between machines, not the absolute rates.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # search() from this checkout, as the CLI child gets via PYTHONPATH


def _args(out: Path, store: str, trials: int, options: list[str]) -> list[str]:
    argv = ["search", "--space", "mbconv", "--target", "xeon-2.8ghz", "--latency-ms", "8", "--trials", str(trials),
            "--out", str(out), "--quiet"]
    for opt in options:
        argv += ["--evaluator-option", opt]
    if store == "jsonl":
        argv += ["--storage", f"jsonl:{out / 'trials.jsonl'}"]
    return argv


def run_cli(out: Path, store: str, trials: int, options: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one `nas search` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # as a user runs it: no thread pinning here (the search pins its BLAS threads itself, nas/pipeline/threads.py)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    subprocess.run([sys.executable, "-m", "nas.cli", *_args(out, store, trials, options)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_api(out: Path, store: str, trials: int, options: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one `nas.search()` call in this process (imports already paid)."""
    from nas import SearchConfig, search
    opts = dict(o.split("=", 1) for o in options)
    cfg = SearchConfig(space="mbconv", targets=("xeon-2.8ghz",), latency_ms=(8.0,), trials=trials, out=str(out),
                       evaluator_options=opts, storage=f"jsonl:{out / 'trials.jsonl'}" if store == "jsonl" else None)
    t0, c0 = time.perf_counter(), time.process_time()
    search(cfg, progress=False)
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--evaluator-option", action="append", default=None,
                    help="zero-cost evaluator option (default proxy=flops; '' for the default proxy)")
    args = ap.parse_args(argv)
    options = [o for o in (args.evaluator_option if args.evaluator_option is not None else ["proxy=flops"]) if o]
    runs = [(mode, store) for store in ("sqlite", "jsonl") for mode in ("cli", "api")]
    wall: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    cpu: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    tmp = Path(tempfile.mkdtemp(prefix="search_speed_"))
    try:
        run_api(tmp / "warm", "jsonl", 5, options)   # imports and table loads out of the timed API runs
        for r in range(args.rounds):
            for mode, store in runs:
                out = tmp / f"{mode}-{store}-{r}"
                w, c = (run_cli if mode == "cli" else run_api)(out, store, args.trials, options)
                wall[(mode, store)].append(w)
                cpu[(mode, store)].append(c)
                print(f"round {r}: {mode:<3} {store:<6} wall {w:6.2f} s  cpu {c:6.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: (float(np.median(wall[k])), float(np.median(cpu[k]))) for k in runs}
    print(f"\n{args.trials} trials, evaluator options {options or '(default proxy)'}, median of {args.rounds} rounds")
    print(f"{'run':<14} {'wall s':>7} {'cpu s':>7} {'trials/s wall':>14} {'trials/s cpu':>13}")
    for mode, store in runs:
        w, c = med[(mode, store)]
        name = f"{'CLI' if mode == 'cli' else 'search()'} {store}"
        print(f"{name:<14} {w:>7.2f} {c:>7.2f} {args.trials / w:>14.0f} {args.trials / c:>13.0f}")
    for mode in ("cli", "api"):
        print(f"SQLite / jsonl time, {mode}: wall {med[(mode, 'sqlite')][0] / med[(mode, 'jsonl')][0]:.2f}, "
              f"cpu {med[(mode, 'sqlite')][1] / med[(mode, 'jsonl')][1]:.2f}")
    for store in ("sqlite", "jsonl"):
        print(f"CLI / search() time, {store}: wall {med[('cli', store)][0] / med[('api', store)][0]:.2f}, "
              f"cpu {med[('cli', store)][1] / med[('api', store)][1]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
