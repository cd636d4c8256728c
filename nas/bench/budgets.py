"""`nas bench budgets`: does every strategy family return an arch within a tight bound?

For each (strategy, space) pair the bound is the `quantile`-th percentile of the predicted latency of
400 random archs of the space on `target` (seeded): only that share of the space meets it. Each
strategy runs `seeds` searches under `--latency-ms BOUND` with small settings (few trials, one
training epoch at the proxy size on a small synthetic set (`dataset`, default 64 images, batches of 16), the `flops` proxy for ask/tell strategies),
and the row reports the share of seeds whose result meets the bound, the mean slack (bound - predicted
latency of the result), and for the weight-sharing / differentiable families the score lost to the
projection (unconstrained arch's score - projected arch's score, both scored as trials; 0 when the
derived arch already met the bound) and how often it was needed. A search that fails ("no arch met
...") counts as a miss. CPU seconds are process time.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Sequence

import numpy as np

from nas.core.errors import NasError, UsageError

log = logging.getLogger(__name__)

#: (strategy, space, space options, strategy options, trials, search-wide epochs)
CASES: tuple[tuple[str, str, dict[str, Any], dict[str, Any], int, int | None], ...] = (
    ("evolution", "mbconv", {}, {}, 20, None),
    ("random", "mbconv", {}, {}, 20, None),
    ("tpe", "mbconv", {}, {}, 20, None),
    ("exact", "mbconv", {}, {}, 1, None),
    ("evolution", "nasnet", {"variant": "darts"}, {}, 20, None),
    ("supernet", "mbconv", {}, {"calib_batches": 1}, 5, 1),
    ("single-path", "mbconv", {}, {"calib_batches": 1}, 1, 1),
    ("differentiable", "mbconv", {}, {"calib_batches": 1}, 1, 1),
    ("darts", "nasnet", {"variant": "darts"}, {"retrain_epochs": 1}, 1, 1),
)
FAMILIES = tuple(dict.fromkeys(c[0] for c in CASES))


def tight_bound(space: str, options: dict[str, Any], target: str, quantile: float, archs: int = 400,
                seed: int = 0) -> float:
    """The `quantile`-th percentile of random archs' predicted latency on `target`."""
    from latency.targets import lut_model
    from search_spaces.catalog import get_space
    sp = get_space(space, **options)
    model = lut_model(target, sp, progress=False)
    rng = np.random.default_rng(seed)
    return float(np.percentile([model.predict(sp.sample(rng)) for _ in range(archs)], quantile))


MAX_SEEDS = 1000   # searches per strategy


def budget_benchmark(strategies: Sequence[str] | None = None, seeds: int = 10, target: str = "pixel1",
                     quantile: float = 10.0, on_run: Callable[[dict[str, Any]], None] | None = None,
                     first_seed: int = 0, dataset: str = "synthetic:64", batch_size: int = 16) -> dict[str, Any]:
    from nas.pipeline.config import SearchConfig
    from nas.pipeline.search import search
    wanted = list(strategies or FAMILIES)
    bad = [s for s in wanted if s not in FAMILIES]
    if bad:
        raise UsageError(f"nas bench budgets: no case for strategy {bad[0]!r}; valid: {', '.join(FAMILIES)}")
    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    if seeds > MAX_SEEDS:   # each seed is a real search per strategy
        raise UsageError(f"--seeds {seeds} is too many: at most {MAX_SEEDS}")
    rows = []
    for name, space, sopts, opts, trials, epochs in CASES:
        if name not in wanted:
            continue
        bound = tight_bound(space, sopts, target, quantile)
        runs = []
        for seed in range(first_seed, first_seed + seeds):
            cfg = SearchConfig(space=space, space_options=dict(sopts), targets=(target,), latency_ms=(bound,),
                               strategy=name, strategy_options=dict(opts), evaluator="zero-cost",
                               evaluator_options={"proxy": "flops"} if epochs is None else {},
                               trials=trials, seed=seed, epochs=epochs, dataset=None if epochs is None else dataset,
                               batch_size=None if epochs is None else batch_size)
            t0 = time.process_time()
            run: dict[str, Any] = {"seed": seed}
            try:
                res = search(cfg, progress=False)
            except NasError as exc:
                run.update(met=False, error=str(exc))
            else:
                best = res.best if res is not None else None
                lat = best.metrics.get(f"latency_ms.{target}") if best is not None else None
                run.update(met=bool(lat is not None and lat <= bound), latency_ms=lat, slack_ms=None if lat is None
                           else bound - lat, score=best.metrics.get("score") if best is not None else None)
                proj = (res.summary.get("training") or {}).get("projection") if res is not None else None
                if proj is not None:
                    run.update(projected=bool(proj.get("changed")), score_lost=proj.get("score_lost", 0.0)
                               if proj.get("changed") else 0.0, unconstrained_ms=proj["unconstrained_values"].get(
                                   f"latency_ms.{target}"))
            run["cpu_s"] = time.process_time() - t0
            runs.append(run)
            if on_run:
                on_run({"strategy": name, "space": space, **run})
        slacks = [r["slack_ms"] for r in runs if r.get("slack_ms") is not None]
        lost = [r["score_lost"] for r in runs if r.get("score_lost") is not None]
        rows.append({"strategy": name, "space": space, "space_options": sopts, "bound_ms": bound,
                     "seeds": seeds, "met": sum(r["met"] for r in runs) / seeds,
                     "mean_slack_ms": float(np.mean(slacks)) if slacks else math.nan,
                     "projected": sum(bool(r.get("projected")) for r in runs) if lost else None,
                     "mean_score_lost": float(np.mean(lost)) if lost else None,
                     "cpu_s": sum(r["cpu_s"] for r in runs), "runs": runs})
    return {"target": target, "quantile": quantile, "dataset": dataset, "batch_size": batch_size, "rows": rows}


def format_budgets(result: dict[str, Any]) -> str:
    head = (f"tight bound: the {result['quantile']:g}th percentile of 400 random archs' latency on "
            f"{result['target']}\n{'strategy':<15} {'space':<8} {'bound ms':>9} {'seeds':>5} {'met':>6} "
            f"{'slack ms':>9} {'projected':>9} {'score lost':>10} {'cpu s':>7}")
    lines = [head]
    for r in result["rows"]:
        proj = "-" if r["projected"] is None else f"{r['projected']}/{r['seeds']}"
        lost = "-" if r["mean_score_lost"] is None else f"{r['mean_score_lost']:.4f}"
        lines.append(f"{r['strategy']:<15} {r['space']:<8} {r['bound_ms']:>9.2f} {r['seeds']:>5} {r['met']:>6.0%} "
                     f"{r['mean_slack_ms']:>9.3f} {proj:>9} {lost:>10} {r['cpu_s']:>7.1f}")
    return "\n".join(lines)
