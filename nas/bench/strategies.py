"""`nas bench strategies`: search strategies against random search on benchmark ground truth.

    nas bench strategies --space nats_sss|nb201 [--seeds 20] [--budgets 50,100,300] [--json] [--plot P.png]

Every strategy runs the ordinary in-process pipeline (`nas.pipeline.search.plan/train/run`, memory store) with
the `tabular` evaluator (ground-truth CIFAR-10 accuracy) under one latency bound on one device:

- `nats_sss`: all 32,768 NATS size-space archs, latency from the `pixel1` device model;
- `nb201`: NASLib's 725 NB201 archs (`-o candidates=naslib`), latency measured on `pixel3` (HW-NAS-Bench);
- `nasnet`: the DARTS space restricted to NASLib's 725 NAS-Bench-301 cells (`-o variant=darts -o
  candidates=nb301`), NB301 CIFAR-10 accuracy, latency from the `pixel1` model of the DARTS
  evaluation net (36 channels, 20 cells; the accuracy is NB301's, at 32 channels / 8 cells).

Each strategy and random search run `--seeds` seeds each (seed s of every strategy is one run of
max(budgets) evaluations); the first n evaluations of a run are its result at budget n, except for
`BUDGET_AWARE` strategies, which get a run of exactly n evaluations per budget (as `--trials n`). Scores:

- single-objective constrained strategies (evolution, random, tpe, zero-cost): the best ground-truth
  accuracy among the feasible archs evaluated (latency <= bound);
- multi-objective ones (nsga2, optuna-nsga2): the hypervolume of the evaluated (accuracy, latency)
  points, both in the feasible box, w.r.t. the fixed reference (lowest accuracy of the space, the bound),
  divided by the hypervolume of the space's true feasible Pareto front (1.0 = the whole true front).

Both scores are computed for every strategy (random included), and for single-objective ones the
**regret**: the exact optimum under the bound (every arch with truth enumerated) minus the best
feasible accuracy found. Seed s of every strategy is run with the same seed, so each strategy is
compared with random search at the same budget by a paired test over the shared seeds: a two-sided
Wilcoxon signed-rank test on the per-seed differences of its score, with Holm's correction over
all the comparisons of the run (strategies x budgets; `p_holm`). `half_random_regret` says whether
the strategy's mean regret is at most half of random search's.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nas.core.errors import UsageError

log = logging.getLogger(__name__)

#: strategies optimising one objective under the bound, and those searching the (accuracy, latency) front
SINGLE_OBJECTIVE: tuple[str, ...] = ("evolution", "random", "tpe", "zero-cost", "bo")
MULTI_OBJECTIVE: tuple[str, ...] = ("nsga2", "optuna-nsga2")
STRATEGIES: tuple[str, ...] = ("evolution", "bo", "tpe", "zero-cost", "nsga2", "optuna-nsga2")
#: strategies that plan for the budget they are given (evolution sizes its population and local phase
#: by --trials): their result at a budget below the largest comes from a run of exactly that budget
BUDGET_AWARE: tuple[str, ...] = ("evolution",)


@dataclass(frozen=True)
class BenchSetup:
    """The problem of one benchmark space: options, device, bound, ground-truth column."""

    space: str
    space_options: dict[str, Any] = field(default_factory=dict)
    target: str = "pixel1"
    latency_ms: float = 10.0
    truth: str = "cifar10"


#: the default problem per space: nats_sss under 10 ms on pixel1 (5,116 of 32,768 archs feasible with the
#: current pixel1 fit); nb201 under 14 ms on pixel3 (492 of NASLib's 724), since 300 evaluations would
#: exhaust a tighter bound
SETUPS: dict[str, BenchSetup] = {
    "nats_sss": BenchSetup("nats_sss", {}, "pixel1", 10.0),
    "nb201": BenchSetup("nb201", {"candidates": "naslib"}, "pixel3", 14.0),
    # 120 ms on pixel1: 331 of the 725 cells feasible (median 122.3 ms), optimum 94.24% (best overall 94.49%)
    "nasnet": BenchSetup("nasnet", {"variant": "darts", "candidates": "nb301"}, "pixel1", 120.0),
}
#: zero-cost warm-up settings: a 64-arch synflow pool at 32x32 keeps 20 seeds within seconds per seed
ZERO_COST_OPTIONS: dict[str, Any] = {"pool": 64, "proxy": "synflow", "proxy_resolution": 32}


def setup_for(space: str, target: str | None = None, latency_ms: float | None = None) -> BenchSetup:
    if space not in SETUPS:
        raise UsageError(f"no strategy benchmark for space {space!r}; valid spaces: {', '.join(SETUPS)}")
    base = SETUPS[space]
    if latency_ms is not None and not latency_ms > 0:
        raise UsageError(f"--latency-ms must be positive, got {latency_ms:g}")
    return BenchSetup(base.space, dict(base.space_options), target or base.target,
                      float(latency_ms) if latency_ms is not None else base.latency_ms, base.truth)


# ---- the reference: every arch with truth ------------------------------------------------------------
def reference(setup: BenchSetup) -> dict[str, Any]:
    """Exact optimum under the bound, the true feasible front's hypervolume and the fixed reference point."""
    from latency.targets import lut_model
    from nas.evaluators.tabular import truth_table
    from search_spaces.catalog import get_space
    space = get_space(setup.space, **setup.space_options)
    model = lut_model(setup.target, space, False)
    truth = truth_table(setup.space, setup.truth)
    candidates = getattr(space, "_candidates", None)   # nb201: the searchable list (archs with truth)
    archs = list(candidates.archs) if candidates is not None else [space.parse(block) for block in truth]
    acc = np.array([truth[space.format(a)] for a in archs], dtype=np.float64)
    lat = np.array([model.predict(a) for a in archs], dtype=np.float64)
    ok = lat <= setup.latency_ms
    if not ok.any():
        raise UsageError(f"--latency-ms {setup.latency_ms:g} on {setup.target}: no {setup.space} arch is that fast "
                         f"(fastest {lat.min():.2f} ms)")
    ref = (float(acc.min()), float(setup.latency_ms))
    front = _hypervolume(acc[ok], lat[ok], ref)
    if not front > 0:
        raise UsageError(f"--latency-ms {setup.latency_ms:g} on {setup.target}: only archs at the space's lowest "
                         f"accuracy ({ref[0]:g}%) are that fast; loosen the bound (median arch "
                         f"{float(np.median(lat)):.2f} ms)")
    return {"archs": int(len(acc)), "feasible": int(ok.sum()), "best_feasible_accuracy": float(acc[ok].max()),
            "best_accuracy": float(acc.max()), "reference_point": {"accuracy": ref[0], "latency_ms": ref[1]},
            "front_hypervolume": front}


def _hypervolume(acc: np.ndarray, lat: np.ndarray, ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy max, latency min) points inside the box of `ref`."""
    from nas.strategies.nsga2 import hypervolume_2d
    if len(acc) == 0:
        return 0.0
    return hypervolume_2d(np.stack([-np.asarray(acc, float), np.asarray(lat, float)], 1), (-ref[0], ref[1]))


# ---- runs ----------------------------------------------------------------------------------------------
def run_strategy(setup: BenchSetup, strategy: str, seed: int, evaluations: int) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, latency) of the first `evaluations` trials of one seeded search, in evaluation order."""
    from nas.pipeline.search import plan, run, train
    from nas.pipeline.config import SearchConfig
    options = dict(ZERO_COST_OPTIONS) if strategy == "zero-cost" else {}
    if strategy == "zero-cost":
        options["progress"] = False
    cfg = SearchConfig(space=setup.space, space_options=dict(setup.space_options), targets=(setup.target,),
                       latency_ms=(setup.latency_ms,), strategy=strategy, strategy_options=options,
                       evaluator="tabular", evaluator_options={"dataset": setup.truth}, trials=evaluations, seed=seed)
    p = plan(cfg, progress=False)
    trials = run(p, train(p, False), progress=False)
    key = f"latency_ms.{setup.target}"
    acc = np.array([t.metrics["accuracy"] if t.ok else math.nan for t in trials], dtype=np.float64)
    lat = np.array([t.metrics[key] if t.ok else math.inf for t in trials], dtype=np.float64)
    return acc, lat


def curves(acc: np.ndarray, lat: np.ndarray, bound: float, ref: tuple[float, float], front_hv: float,
           budgets: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Best feasible accuracy and normalised hypervolume after each budget's first n evaluations."""
    ok = np.isfinite(acc) & (lat <= bound)
    best = np.array([np.max(acc[:n][ok[:n]]) if ok[:n].any() else math.nan for n in budgets])
    hv = np.array([_hypervolume(acc[:n][ok[:n]], lat[:n][ok[:n]], ref) / front_hv for n in budgets])
    return best, hv


def _compare(values: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test on the paired (same seed) differences; p = 1 when they are all 0."""
    from scipy.stats import wilcoxon
    ok = np.isfinite(values) & np.isfinite(baseline)
    diff = values[ok] - baseline[ok]
    if len(diff) < 2:
        return {"p_value": math.nan, "w": math.nan, "pairs": int(len(diff))}
    if not np.any(diff != 0):
        return {"p_value": 1.0, "w": 0.0, "pairs": int(len(diff))}
    res = wilcoxon(diff, alternative="two-sided", zero_method="wilcox")
    return {"p_value": float(res.pvalue), "w": float(res.statistic), "pairs": int(len(diff))}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    idx = [i for i in np.argsort(p) if np.isfinite(p[i])]
    out = np.full(len(p), math.nan)
    running, m = 0.0, len(idx)
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def _stats(values: np.ndarray) -> dict[str, float]:
    v = values[np.isfinite(values)]
    if len(v) == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


#: bounds of the command line: a run is max(budgets) evaluations per strategy and seed, and each keeps its curve
MAX_SEEDS = 1000
MAX_BUDGET = 10_000


def strategy_benchmark(space: str, strategies: Sequence[str] | None = None, seeds: int = 20,
                       budgets: Sequence[int] = (50, 100, 300), target: str | None = None,
                       latency_ms: float | None = None, seed: int = 0, progress: bool = True,
                       curve_points: int = 30) -> dict[str, Any]:
    """Run every strategy and random search over `seeds` seeds (seed, seed+1, ...); see the module doc."""
    from tqdm import tqdm

    from nas.strategies.catalog import STRATEGIES as REGISTRY
    names = [s for s in (strategies or STRATEGIES) if s != "random"]
    for name in names:
        REGISTRY.get(name)   # unknown name: error listing the valid ones
        if name not in SINGLE_OBJECTIVE + MULTI_OBJECTIVE:
            raise UsageError(f"strategy {name!r} is not benchmarked here; valid: "
                             f"{', '.join(SINGLE_OBJECTIVE + MULTI_OBJECTIVE)}")
    if seeds < 2:
        raise UsageError(f"--seeds must be at least 2 for a significance test, got {seeds}")
    if seeds > MAX_SEEDS:
        raise UsageError(f"--seeds {seeds} is too many: at most {MAX_SEEDS}")
    budgets = sorted({int(b) for b in budgets})
    if not budgets or budgets[0] < 1:
        raise UsageError(f"--budgets must be positive evaluation counts, got {budgets}")
    if budgets[-1] > MAX_BUDGET:
        raise UsageError(f"--budgets {budgets[-1]} is too large: at most {MAX_BUDGET} evaluations "
                         f"(every strategy runs that many per seed)")
    setup = setup_for(space, target, latency_ms)
    t0 = time.perf_counter()
    ref_info = reference(setup)
    ref = (ref_info["reference_point"]["accuracy"], setup.latency_ms)
    horizon = budgets[-1]
    if horizon > ref_info["feasible"]:   # every strategy would have evaluated the whole feasible set
        raise UsageError(f"--budgets {horizon} is more than the {ref_info['feasible']} feasible archs of {space} under "
                         f"{setup.latency_ms:g} ms on {setup.target}: a search that evaluates only feasible new archs "
                         f"has seen them all by then; give budgets of at most {ref_info['feasible']} or a looser "
                         f"--latency-ms")
    grid = sorted(set(np.linspace(1, horizon, curve_points).round().astype(int).tolist()) | set(budgets))
    runs: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    bar = tqdm(total=seeds * (len(names) + 1), desc=f"strategies on {space}", unit="run", disable=not progress)
    for name in ["random"] + names:
        best_runs, hv_runs = [], []
        started = time.perf_counter()
        for s in range(seed, seed + seeds):
            acc, lat = run_strategy(setup, name, s, horizon)
            best, hv = curves(acc, lat, setup.latency_ms, ref, ref_info["front_hypervolume"], grid)
            for b in (budgets[:-1] if name in BUDGET_AWARE else []):   # its own run with --trials b
                acc, lat = run_strategy(setup, name, s, b)
                best_b, hv_b = curves(acc, lat, setup.latency_ms, ref, ref_info["front_hypervolume"], [b])
                best[grid.index(b)], hv[grid.index(b)] = best_b[0], hv_b[0]
            best_runs.append(best)
            hv_runs.append(hv)
            bar.update(1)
        seconds[name] = time.perf_counter() - started
        runs[name] = {"best": np.array(best_runs), "hv": np.array(hv_runs)}
    bar.close()
    at = [grid.index(b) for b in budgets]
    optimum = ref_info["best_feasible_accuracy"]
    table: dict[str, Any] = {}
    for name in ["random"] + names:
        score = "hypervolume" if name in MULTI_OBJECTIVE else "best_accuracy"
        mine = runs[name]["hv" if score == "hypervolume" else "best"]
        base = runs["random"]["hv" if score == "hypervolume" else "best"]
        row: dict[str, Any] = {"score": score, "seconds": round(seconds[name], 2), "budgets": {}}
        for b, i in zip(budgets, at):
            entry = {score: _stats(mine[:, i]), "random": _stats(base[:, i]),
                     "best_accuracy": _stats(runs[name]["best"][:, i]),
                     "hypervolume": _stats(runs[name]["hv"][:, i]),
                     "regret": _stats(optimum - runs[name]["best"][:, i]),
                     "random_regret": _stats(optimum - runs["random"]["best"][:, i])}
            if name != "random":
                entry.update(_compare(mine[:, i], base[:, i]))
            row["budgets"][str(b)] = entry
        table[name] = row
    keys = [(n, b) for n in names for b in map(str, budgets)]
    for (n, b), p in zip(keys, holm([table[n]["budgets"][b]["p_value"] for n, b in keys])):
        e = table[n]["budgets"][b]
        e["p_holm"] = p
        e["beats_random"] = bool(e[table[n]["score"]]["mean"] > e["random"]["mean"] and p < 0.05)
        e["half_random_regret"] = bool(e["regret"]["mean"] <= 0.5 * e["random_regret"]["mean"])
    return {"space": setup.space, "space_options": setup.space_options, "target": setup.target,
            "latency_ms": setup.latency_ms, "truth": setup.truth, "evaluator": "tabular", "seeds": seeds,
            "first_seed": seed, "budgets": budgets, "reference": ref_info,
            "zero_cost_options": ZERO_COST_OPTIONS, "test": ("two-sided Wilcoxon signed-rank vs random, paired by seed, same budget; Holm-corrected over "
                     "strategies x budgets (p_holm)"),
            "strategies": table,
            "curves": {"evaluations": grid,
                       **{n: {"best_accuracy_mean": np.nanmean(r["best"], 0).tolist(),
                              "best_accuracy_std": np.nanstd(r["best"], 0).tolist(),
                              "hypervolume_mean": r["hv"].mean(0).tolist(),
                              "hypervolume_std": r["hv"].std(0).tolist()} for n, r in runs.items()}},
            "seconds": round(time.perf_counter() - t0, 2)}


def format_strategies(result: dict[str, Any]) -> str:
    """A plain-text table: per strategy and budget, mean +- std of its score, random's, and the p-value."""
    ref = result["reference"]
    lines = [f"{result['space']} {result['space_options'] or ''} on {result['target']} <= {result['latency_ms']:g} ms, "
             f"tabular {result['truth']}, {result['seeds']} seeds from {result.get('first_seed', 0)}; exact feasible "
             f"optimum {ref['best_feasible_accuracy']:.2f}% ({ref['feasible']}/{ref['archs']} archs feasible)",
             f"{'strategy':<13} {'score':<13} {'evals':>5} {'mean':>8} {'std':>6} {'random':>8} {'regret':>7} "
             f"{'rand.reg':>8} {'p':>8} {'p_holm':>8}  verdict"]
    for name, row in result["strategies"].items():
        for b, e in row["budgets"].items():
            s = e[row["score"]]
            r = e["random"]
            p, ph = e.get("p_value", math.nan), e.get("p_holm", math.nan)
            verdict = "-" if name == "random" else ("better" if e["beats_random"] else
                                                    "worse" if s["mean"] < r["mean"] and ph < 0.05 else "n.s.")
            lines.append(f"{name:<13} {row['score']:<13} {b:>5} {s['mean']:>8.4g} {s['std']:>6.3g} {r['mean']:>8.4g} "
                         f"{e['regret']['mean']:>7.3f} {e['random_regret']['mean']:>8.3f} {p:>8.2g} {ph:>8.2g}  {verdict}")
    lines.append(f"({result['seconds']:.1f} s; hypervolume as a fraction of the true feasible front's)")
    return "\n".join(lines)


def plot_strategies(result: dict[str, Any], path: str) -> str:
    """Two panels: mean best feasible accuracy and mean normalised hypervolume vs evaluations (+- std)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["curves"]
    x = np.array(c["evaluations"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "best_accuracy", "best feasible accuracy (%)"),
                           (axes[1], "hypervolume", "hypervolume / true front's")):
        for name in result["strategies"]:
            mean, std = np.array(c[name][f"{key}_mean"]), np.array(c[name][f"{key}_std"])
            ax.plot(x, mean, label=name, lw=2 if name == "random" else 1.3, ls="--" if name == "random" else "-")
            ax.fill_between(x, mean - std, mean + std, alpha=0.12)
        if key == "best_accuracy":
            ax.axhline(result["reference"]["best_feasible_accuracy"], color="k", lw=0.8, ls=":", label="optimum")
            ax.set_ylim(bottom=max(np.nanmin([np.nanmin(c[n]["best_accuracy_mean"][len(x) // 6:])
                                              for n in result["strategies"]]) - 1.0, 0))
        ax.set_xscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['space']} on {result['target']} <= {result['latency_ms']:g} ms "
                 f"({result['seeds']} seeds, tabular {result['truth']})")
    fig.tight_layout()
    import os
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)   # atomic: a stopped run leaves no half-written plot
    return path
