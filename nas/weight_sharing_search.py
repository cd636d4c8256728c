"""`nas search` for weight-sharing strategies: train first, then search, then export.

`nas.search.search` hands over here when the strategy is a `WeightSharingStrategy`
(``--strategy supernet | single-path | darts``). The flow:

1. latency models and bounds as for any search (a target without a table for the space is only
   an error when the strategy needs latency or a bound is given for it - DARTS does not);
2. ``strategy.prepare(ctx)``: train on the dataset (supernet with the sandwich rule, Single-Path
   NAS thresholds, DARTS alphas), reusing ``<out>/*.pt`` checkpoints when resuming;
3. the ordinary runner: evolution on supernet accuracy (supernet) or the derived arch as the one
   trial (single-path, darts; ``refine=N`` adds N evolution trials around it);
4. the best arch is exported with its inherited / trained weights: ``<out>/subnet.pt`` (load with
   `nas.export.load_torch`) and ``<out>/subnet.onnx`` (checked equal to torch), built on the
   training space (its options are in best.json under ``training.train_space``).

Dataset and training settings come from strategy options (``--strategy-option epochs=2``,
``dataset=digits``, ``batch_size=64``, ``device=cpu``) or from the search config's ``dataset``,
``epochs``, ``batch_size`` and ``device`` fields where it has them.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from nas.errors import LatencyError, NasError, UsageError
from nas.runner import best_trial, run_search
from nas.space import SearchSpace

log = logging.getLogger(__name__)


def _models(cfg: Any, space: SearchSpace, needs_latency: bool) -> dict[str, Any]:
    from latency.targets import lut_model
    models: dict[str, Any] = {}
    for i, target in enumerate(cfg.targets):
        try:
            models[target] = lut_model(target, space)
        except (UsageError, LatencyError) as exc:
            if needs_latency or i < len(cfg.latency_ms):
                raise
            log.warning("no latency on %s for this space (%s); searching without it", target, exc)
    return models


def _check_options(strategy_cls: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Raise UsageError for an option no constructor in the strategy's class hierarchy takes."""
    import inspect
    valid: set[str] = set()
    for klass in strategy_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not object:
            valid |= {n for n, p in inspect.signature(init).parameters.items()
                      if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and n not in ("self", "space"))}
    valid -= {"seed", "feasible"}
    bad = sorted(set(options) - valid)
    if bad:
        raise UsageError(f"strategy {strategy_cls.name!r} has no option {bad[0]!r}; valid options: "
                         f"{', '.join(sorted(valid))}")
    return options


def weight_sharing_search(cfg: Any, space: SearchSpace, progress: bool = True, t0: float | None = None) -> Any:
    """Run `cfg` (a `nas.search.SearchConfig` naming a weight-sharing strategy) on `space`."""
    from nas.evaluators import Compose, LatencyEvaluator
    from nas.search import SearchResult, _check_resume, _summary, latency_constraints, open_search_store
    from nas.strategies import STRATEGIES
    from nas.strategies.weight_sharing import TrainContext

    t0 = time.perf_counter() if t0 is None else t0
    if getattr(cfg, "runner", "local") != "local":
        raise UsageError(f"--strategy {cfg.strategy} trains one shared net in this process; it runs with "
                         f"--runner local only (got --runner {cfg.runner})")
    strategy_cls = STRATEGIES.get(cfg.strategy)
    models = _models(cfg, space, strategy_cls.needs_latency)
    constraints, bounds, feasible = latency_constraints(cfg, models)

    options = _check_options(strategy_cls, cfg.strategy_options)
    strategy = strategy_cls(space, seed=cfg.seed, feasible=feasible, **options)
    out = Path(cfg.out) if cfg.out else None
    store = open_search_store(cfg, space, strategy)
    _check_resume(out, store, cfg)
    ctx = TrainContext(space=space, latency=models, bounds=bounds,
                       # evaluator_options: where searches stored before --dataset existed keep it
                       dataset=cfg.dataset or cfg.evaluator_options.get("dataset") or "digits",
                       epochs=cfg.epochs, batch_size=cfg.batch_size, device=cfg.device or "cpu",
                       seed=cfg.seed, out=out, progress=progress)
    trained = strategy.prepare(ctx)
    evaluator = Compose([LatencyEvaluator(models), trained]) if models else trained
    n = strategy.trials(cfg.trials)
    if n != cfg.trials:
        log.info("%s yields its derived arch as %d trial(s) (--trials %d ignored; refine=N adds evolution trials)",
                 cfg.strategy, n, cfg.trials)
    trials = run_search(strategy, evaluator, n, store, resume=cfg.resume, progress=progress,
                        max_retries=getattr(cfg, "max_retries", 0))
    best = best_trial(trials, strategy.metric, strategy.maximize, constraints)
    summary = _summary(cfg, space, best, trials, constraints, time.perf_counter() - t0)
    summary["training"] = strategy.info
    if "latency_ms_by_target" in summary:   # targets without a table for this space have no latency
        summary["latency_ms_by_target"] = {t: v for t, v in summary["latency_ms_by_target"].items() if v is not None}
    if out is not None and best is not None:
        summary["exports"] = export_inherited(strategy, best.arch, out)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if out is not None and best is not None:
        from latency.table import atomic_write_text
        atomic_write_text(out / "best.json", json.dumps(summary, indent=1, default=str) + "\n")
    return SearchResult(cfg, trials, best, summary, time.perf_counter() - t0)


def export_inherited(strategy: Any, arch: Any, out: Path) -> dict[str, Any]:
    """Write the arch with the weights the strategy trained for it: subnet.pt and subnet.onnx."""
    from nas.export import export_onnx, export_torch
    got = strategy.inherited(arch)
    if got is None:
        return {}
    small, state = got
    sub = small.validate(type(arch)(small.name, arch.genes))
    info: dict[str, Any] = {"space_options": small.options(), "torch": str(export_torch(small, sub, out / "subnet.pt",
                                                                                       state=state))}
    try:
        path, diff = export_onnx(small, sub, out / "subnet.onnx", state=state)
        info.update(onnx=str(path), max_abs_diff_vs_torch=diff)
    except NasError as exc:   # keep the search result; say why the ONNX file is missing
        log.warning("ONNX export of the inherited subnet failed: %s", exc)
        info["onnx_error"] = str(exc)
    return info
