"""CPU per trial of a long search: is the cost linear in trials?

    python benchmarks/search_cost.py [--trials 500,5000,20000] [--space mbconv]

Problem: mbconv, `xeon-2.8ghz` table, latency <= 8 ms, the default strategy (evolution), zero-cost
`proxy=flops` (builds no net), in-memory store, one process (`nas.pipeline.search.plan` and
`nas.pipeline.runner.run_search`, as `nas.search()` runs them). For each run length N it reports the
process CPU seconds per trial over the whole run and over its last tenth (the marginal cost at N trials:
what grows if the strategy's work per trial grows with the history).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's nas


def measure(trials: int, space: str) -> dict[str, float]:
    from nas.pipeline.config import SearchConfig
    from nas.pipeline.runner import run_search
    from nas.pipeline.search import plan, train
    cfg = SearchConfig(space=space, targets=("xeon-2.8ghz",), latency_ms=(8.0,), trials=trials, seed=0,
                       evaluator_options={"proxy": "flops"})
    p = plan(cfg, progress=False)
    evaluator = train(p, False)
    n = p.strategy.trials(trials)
    stamps: list[float] = []
    c0 = time.process_time()
    run_search(p.strategy, evaluator, n, None, progress=False, on_trial=lambda t: stamps.append(time.process_time()))
    total = time.process_time() - c0
    tail = max(1, trials // 10)
    return {"trials": trials, "cpu_s": round(total, 3), "ms_per_trial": round(1000 * total / trials, 3),
            "ms_per_trial_last_tenth": round(1000 * (stamps[-1] - stamps[-tail - 1]) / tail, 3)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", default="500,5000,20000")
    ap.add_argument("--space", default="mbconv")
    args = ap.parse_args(argv)
    measure(20, args.space)   # imports and table loads out of the timed runs
    rows = [measure(int(n), args.space) for n in args.trials.split(",")]
    base = rows[0]["ms_per_trial_last_tenth"]
    for r in rows:
        r["marginal_vs_first"] = round(r["ms_per_trial_last_tenth"] / base, 2)
    print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
