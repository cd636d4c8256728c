"""The result of a search (`finish`): the best trial under the constraints, the summary, inherited-weight
exports, best.json; and the int8 re-scoring of the finalists (`--quantize-top`)."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.core.files import atomic_write_text
from nas.core.space import SearchSpace
from nas.pipeline.config import SearchConfig
from nas.pipeline.runner import best_trial
from nas.strategies.base import Strategy
from nas.store.trial import Trial

#: `p` below is a nas.pipeline.search.SearchPlan (not imported: search imports this module)
SearchPlan = Any

log = logging.getLogger(__name__)

__all__ = ["SearchResult", "finish", "quantize_finalists", "score_name", "export_inherited"]


@dataclass
class SearchResult:
    config: SearchConfig
    trials: list[Trial]
    best: Trial | None
    summary: dict[str, Any]
    seconds: float


# ---- result --------------------------------------------------------------------------------------
def finish(p: SearchPlan, trials: list[Trial]) -> SearchResult:
    """Best trial, summary (+ training info and inherited-weight exports), best.json."""
    best = best_trial(trials, p.strategy.metric, p.strategy.maximize, p.constraints)
    if best is None and p.budget and any(t.ok for t in trials):
        from nas.pipeline.budget import no_feasible
        raise no_feasible(p.budget, [t for t in trials if t.ok], p.space)
    rescored = quantize_finalists(p, trials) if p.cfg.quantize_top else None
    if rescored:   # the best after post-training int8 quantization
        best = next(t for t in trials if t.number == rescored[0]["trial"])
    summary = _summary(p, best, trials)
    if rescored is not None:
        summary["quantized_top"] = rescored
    if p.strategy.info:
        summary["training"] = p.strategy.info
    if best is not None and p.budget:
        from nas.pipeline.budget import budget_summary, projection_scores
        summary["budget"] = budget_summary(p.budget, best)
        if "projection" in p.strategy.info:
            projection_scores(p.strategy.info["projection"], trials, p.space)
        if p.cfg.verify == "cpu":
            from nas.pipeline.budget import verify_cpu
            predicted = {k.split(".", 1)[1]: v for k, v in best.metrics.items() if k.startswith("latency_ms.")}
            bounds = {b.target: b.value for b in p.budget.bounds if b.metric == "latency_ms"}
            summary["budget"]["verify"] = verify_cpu(p.space, best.arch, p.out, predicted, bounds)
    if p.strategy.stats:
        summary["strategy_stats"] = dict(p.strategy.stats)
    if p.out is not None and best is not None:
        exports = export_inherited(p.strategy, best.arch, p.out)
        if exports:
            # the inherited weights belong to the training (proxy) size; latency was predicted for the
            # searched size: say so, so nobody deploys the proxy net believing the predicted latency
            searched = p.space.options()
            differs = {k: v for k, v in exports["space_options"].items() if searched.get(k) != v}
            exports["trained_at"] = {k: {"trained": v, "searched": searched.get(k)} for k, v in differs.items()}
            exports["built_at"] = {k: exports["space_options"][k] for k in SIZE_OPTIONS if k in exports["space_options"]}
            proxy = sorted(k for k in differs if k != "num_classes")
            size = (p.strategy.info.get("train_size") or {})
            exports["train_size"] = "proxy" if proxy else "searched"
            if size.get("why"):
                exports["train_size_why"] = size["why"]
            classes = (f"; the classifier has the dataset's {differs['num_classes']} classes (searched "
                       f"{searched.get('num_classes')})" if "num_classes" in differs else "")
            exports["note"] = (f"subnet files hold the weights trained at the proxy size ({', '.join(proxy)} above); "
                               "latency_ms is for the searched size: run 'nas train' on best.json (or fine-tune "
                               "subnet.pt) for a deployable net" if proxy else
                               "subnet files are at the searched size (resolution and width)") + classes
            summary["exports"] = exports
    seconds = time.perf_counter() - p.started
    summary["seconds"] = round(seconds, 2)
    from nas.core.memory import peak_rss_mb
    summary["peak_rss_mb"] = peak_rss_mb()   # this process's peak so far (training included)
    if p.out is not None and best is not None:
        atomic_write_text(p.out / "best.json", json.dumps(summary, indent=1, default=str) + "\n")
    return SearchResult(p.cfg, trials, best, summary, seconds)


def quantize_finalists(p: SearchPlan, trials: list[Trial]) -> list[dict[str, Any]]:
    """The top `quantize_top` feasible trials by score, re-trained by the train evaluator, quantized to
    int8 and scored again; sorted by int8 accuracy (best first, ties in the original order)."""
    ok = [t for t in trials if t.ok and all(c.ok(t.value(c.metric)) for c in p.constraints)]
    top = sorted(ok, key=lambda t: -t.value(p.strategy.metric))[:p.cfg.quantize_top]
    quantized = getattr(p.evaluator, "quantized", None)
    if quantized is None:
        raise UsageError(f"--quantize-top needs the train evaluator, not {type(p.evaluator).__name__}")
    rows = [{"trial": t.number, "arch": p.space.format(t.arch), "score": t.value(p.strategy.metric),
             **quantized(t.arch)} for t in top]
    log.info("re-scored %d finalists after int8 quantization", len(rows))
    return sorted(rows, key=lambda r: -r["accuracy_int8"])


def _summary(p: SearchPlan, best: Trial | None, trials: list[Trial]) -> dict[str, Any]:
    cfg = p.cfg
    failed = sum(not t.ok for t in trials)
    base: dict[str, Any] = {"space": cfg.space, "space_options": p.space.options(), "target": cfg.targets[0],
                            "targets": list(cfg.targets), "constraints": [str(c) for c in p.constraints],
                            "strategy": cfg.strategy, "evaluator": p.scored_by[0] if p.scored_by else cfg.evaluator,
                            "seed": cfg.seed,
                            "trials": len(trials), "failed_trials": failed}
    if best is None:
        return {**base, "arch": None}
    return {**base, "arch": p.space.format(best.arch), "arch_json": best.arch.to_dict(), "arch_key": best.arch.key,
            "trial_number": best.number, "latency_ms": best.metrics.get("latency_ms"),
            "latency_ms_by_target": {t: best.metrics.get(f"latency_ms.{t}") for t in cfg.targets if t in p.models},
            "score_is": (p.scored_by[1] if p.scored_by and p.scored_by[1] else
                         score_name(best.metrics, cfg.evaluator if p.evaluator is not None else cfg.strategy)),
            "metrics": best.metrics, "size": _size(p.space, best.arch, best.metrics)}


def _size(space: SearchSpace, arch: Arch, metrics: dict[str, Any]) -> dict[str, float]:
    """params_m and macs_m of the best arch: from its metrics, else counted here (an evaluator that
    builds no net, e.g. tabular, gives neither: the summary said "params: 0.00 M  MACs: 0 M")."""
    size = {k: float(metrics[k]) for k in ("params_m", "macs_m") if isinstance(metrics.get(k), (int, float))}
    try:
        if "macs_m" not in size:
            size["macs_m"] = space.macs(arch) / 1e6
        if "params_m" not in size:
            size["params_m"] = sum(t.numel() for t in space.build(arch).parameters()) / 1e6
    except Exception as exc:  # a space without a net builder: the summary says n/a
        log.info("cannot count the size of the best arch (%s: %s)", type(exc).__name__, exc)
    return size


def score_name(metrics: dict[str, Any], scorer: str) -> str:
    """What the `score` metric is: the metric it copies (a proxy such as naswot, or an accuracy),
    with the evaluator or strategy that produced it."""
    score = metrics.get("score")
    same = [k for k, v in metrics.items() if k != "score" and v == score and not k.startswith("latency_ms")
            and k not in ("params_m", "macs_m")]
    if not same:
        return scorer
    return f"{same[0]} proxy" if scorer == "zero-cost" else f"{same[0]}, {scorer}"


#: the space options that make a net's size: the ones the summary names for subnet.pt / subnet.onnx
SIZE_OPTIONS = ("resolution", "width_mult", "channels", "cells", "patch", "num_classes")


def export_inherited(strategy: Strategy, arch: Arch, out: Path) -> dict[str, Any]:
    """Write the arch with the weights the strategy trained for it: subnet.pt and subnet.onnx
    (nothing for strategies without trained weights)."""
    got = strategy.inherited(arch)
    if got is None:
        return {}
    from nas.deploy.export import export_onnx, export_torch
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
