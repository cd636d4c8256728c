"""`search()`: put a space, targets, a strategy, an evaluator and a store together and run.

This is what `nas search` calls; it is also the Python entry point:

    from nas.search import SearchConfig, search
    result = search(SearchConfig(space="mbconv", targets=("pixel1",), latency_ms=(80.0,), trials=50))
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nas.errors import SearchError, UsageError
from nas.runner import Constraint, best_trial, run_search
from nas.trial import JsonlStore, MemoryStore, Trial

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchConfig:
    space: str = "mbconv"
    space_options: dict[str, Any] = field(default_factory=dict)
    targets: tuple[str, ...] = ("pixel1",)
    latency_ms: tuple[float, ...] = ()       # bounds, matched to targets in order
    strategy: str = "evolution"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    evaluator: str = "zero-cost"
    evaluator_options: dict[str, Any] = field(default_factory=dict)
    trials: int = 50
    seed: int = 0
    out: str | None = None
    resume: bool = True


@dataclass
class SearchResult:
    config: SearchConfig
    trials: list[Trial]
    best: Trial | None
    summary: dict[str, Any]
    seconds: float


def search(cfg: SearchConfig, progress: bool = True) -> SearchResult:
    from latency.targets import lut_model
    from nas.evaluators import Compose, LatencyEvaluator, make_evaluator
    from nas.strategies import STRATEGIES
    from search_spaces import get_space

    if cfg.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {cfg.trials}")
    if not cfg.targets:
        raise UsageError("at least one --target is needed")
    if len(cfg.latency_ms) > len(cfg.targets):
        raise UsageError(f"{len(cfg.latency_ms)} latency bounds given for {len(cfg.targets)} targets")
    t0 = time.perf_counter()
    space = get_space(cfg.space, **cfg.space_options)
    strategy_cls = STRATEGIES.get(cfg.strategy)
    models = {t: lut_model(t, space) for t in cfg.targets}
    constraints = []
    for target, bound in zip(cfg.targets, cfg.latency_ms):
        if not bound > 0:
            raise UsageError(f"--latency-ms must be positive, got {bound:g}")
        fastest = models[target].min_ms()
        if bound < fastest:
            raise SearchError(f"latency bound {bound:g} ms on {target} is impossible: the fastest {cfg.space} "
                              f"arch takes {fastest:.2f} ms there")
        constraints.append(Constraint(f"latency_ms.{target}", bound))

    def feasible(arch: Any) -> bool:
        return all(models[t].predict(arch) <= b for t, b in zip(cfg.targets, cfg.latency_ms))

    strategy = strategy_cls(space, seed=cfg.seed, feasible=feasible, **cfg.strategy_options)
    evaluator = Compose([LatencyEvaluator(models), make_evaluator(cfg.evaluator, space, seed=cfg.seed,
                                                                  **cfg.evaluator_options)])
    out = Path(cfg.out) if cfg.out else None
    store = JsonlStore(out / "trials.jsonl") if out else MemoryStore()
    if out is not None:
        _check_resume(out, cfg)
    trials = run_search(strategy, evaluator, cfg.trials, store, resume=cfg.resume, progress=progress)
    best = best_trial(trials, strategy.metric, strategy.maximize, constraints)
    seconds = time.perf_counter() - t0
    summary = _summary(cfg, space, best, trials, constraints, seconds)
    if out is not None and best is not None:
        from latency.table import atomic_write_text
        atomic_write_text(out / "best.json", json.dumps(summary, indent=1) + "\n")
    return SearchResult(cfg, trials, best, summary, seconds)


def _check_resume(out: Path, cfg: SearchConfig) -> None:
    """Store the config beside the trials; refuse to resume a folder made with another config."""
    from latency.table import atomic_write_text
    path = out / "config.json"
    mine = {k: v for k, v in asdict(cfg).items() if k not in ("trials", "out", "resume")}
    mine = json.loads(json.dumps(mine))
    if path.exists() and cfg.resume:
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(mine) if old.get(k) != mine.get(k))
        if diff:
            raise UsageError(f"{out} holds a search with other settings ({', '.join(diff)}); "
                             f"use another --out, the same settings, or --no-resume")
    atomic_write_text(path, json.dumps(mine, indent=1) + "\n")


def _summary(cfg: SearchConfig, space: Any, best: Trial | None, trials: list[Trial],
             constraints: list[Constraint], seconds: float) -> dict[str, Any]:
    failed = sum(not t.ok for t in trials)
    base: dict[str, Any] = {"space": cfg.space, "space_options": space.options(), "target": cfg.targets[0],
                            "targets": list(cfg.targets), "constraints": [str(c) for c in constraints],
                            "strategy": cfg.strategy, "evaluator": cfg.evaluator, "seed": cfg.seed,
                            "trials": len(trials), "failed_trials": failed, "seconds": round(seconds, 2)}
    if best is None:
        return {**base, "arch": None}
    return {**base, "arch": space.format(best.arch), "arch_json": best.arch.to_dict(), "arch_key": best.arch.key,
            "trial_number": best.number, "latency_ms": best.metrics.get("latency_ms"),
            "latency_ms_by_target": {t: best.metrics.get(f"latency_ms.{t}") for t in cfg.targets},
            "metrics": best.metrics}
