"""The catalogue behind `nas list`: what each space, strategy, evaluator and target is, with its
options and their defaults, as rows of plain data.

Descriptions of the shipped strategies and evaluators are kept here (one line each); a strategy
added later without an entry is described by its class or module docstring. Listing strategies and
spaces imports their modules; evaluator options are read only with `verbose` (they import torch).
"""
from __future__ import annotations

import inspect
import math
import sys
from typing import Any, Callable
from nas.core.errors import NasError

SECTIONS = ("spaces", "strategies", "evaluators", "targets")


def list_catalogue(what: str, verbose: bool = False) -> list[dict[str, Any]]:
    """Rows describing the registered spaces, targets, strategies or evaluators (`nas.api.list_catalogue`)."""
    from nas.core.errors import UsageError
    if what == "evaluators":
        return evaluators(verbose)
    if what in SECTIONS:
        return globals()[what]()   # type: ignore[no-any-return]
    raise UsageError(f"cannot list {what!r}; valid: {', '.join(SECTIONS)}")


#: what `nas search` uses when --strategy / --evaluator / proxy=... are not given
DEFAULT_STRATEGY = "evolution"
DEFAULT_EVALUATOR = "zero-cost"
DEFAULT_PROXY = "naswot"

STRATEGY_SUMMARIES = {
    "evolution": "regularized evolution (Real et al. 2019) with multi-gene mutation, crossover, and repair / fill "
                 "toward the latency bound",
    "exact": "the exact optimum (MILP) of a separable space with an additive score (proxy=flops|params) and LUT latency",
    "random": "uniform random samples within the latency bounds (the baseline)",
    "nsga2": "NSGA-II Pareto fronts of score x latency (our implementation)",
    "tpe": "Optuna's TPE sampler behind ask/tell (MOTPE with several objectives)",
    "optuna-nsga2": "Optuna's NSGA-II sampler behind ask/tell",
    "zero-cost": "evolution warmed up by ranking a pool of archs with a training-free proxy",
    "differentiable": "ProxylessNAS on any supernet: arch logits, sampled paths, REINFORCE + expected LUT latency",
    "supernet": "one-shot: trains a weight-sharing supernet (sandwich rule; on nasnet uniform single paths, as "
                "SPOS), then evolution on its accuracy",
    "single-path": "Single-Path NAS: one superkernel net with a differentiable LUT latency term (mbconv)",
    "darts": "DARTS cell search on nasnet -o variant=darts; the derived cell is retrained to score it",
}
#: what each strategy option does (`nas list strategies --verbose`); one line each
OPTION_HELP = {
    "lr": "learning rate of the network weights",
    "arch_lr": "learning rate of the architecture parameters",
    "order": "DARTS gradient order: 1 (first-order) or 2 (second-order, unrolled step)",
    "channels": "proxy size: initial channels of the nasnet training net",
    "cells": "proxy size: cells of the nasnet training net",
    "warmup_epochs": "epochs of weights-only training before the architecture is updated",
    "retrain_epochs": "epochs retraining the derived arch to score it",
    "retrain_lr": "learning rate of that retraining",
    "resolution": "proxy size: input resolution the net trains at (None: the strategy picks)",
    "epochs": "training epochs (None: --epochs, else the strategy's default)",
    "batch_size": "training batch size (None: --batch-size, else 64)",
    "dataset": "training data (None: --dataset, else digits)",
    "device": "torch device for training (None: --device, else cpu)",
    "refine": "evolution trials added after the derived arch",
    "train_options": "further space options of the training net, e.g. {\"patch\": 4}",
    "train_size": "auto | proxy | searched: train at a proxy size or at the searched one",
    "population": "evolution: archs in the population ('auto': from the trial budget)",
    "sample_size": "evolution: tournament size ('auto': from the population)",
    "crossover": "evolution: probability a child comes from crossover of two winners",
    "mutation_rate": "evolution: genes changed per child on average",
    "repair": "evolution: step infeasible archs down to cheaper choices until they meet the bound",
    "fill": "evolution: probability of spending latency slack on costlier choices",
    "local": "evolution: share of the last trials spent as one-gene steps around the best",
    "guide": "evolution: share of children steered by a surrogate of the score",
    "problem": "the latency tables and score the strategy may read (set by the search)",
    "metric": "the trial metric optimised",
    "maximize": "whether that metric is maximised",
    "objectives": "several objectives, e.g. 'score:max,latency_ms:min'",
    "paths": "paths sampled per step (REINFORCE)",
    "lam": "weight of the latency term in the architecture loss",
    "target_ms": "latency the latency term aims at (None: the --latency-ms bound)",
    "width_mult": "proxy size: mbconv width multiplier of the training net",
    "calib_batches": "batches that recalibrate BatchNorm before a subnet is scored",
    "max_retries": "retries of a failed evaluation",
    "tau": "sigmoid temperature of the relaxed superkernel indicator (backward pass)",
    "t_init": "initial superkernel thresholds, in units of the initial group norms (< 1: all on)",
    "random_paths": "random subnets per step besides the largest and smallest (sandwich rule)",
    "distill": "train the subnets on the largest one's outputs (in-place distillation)",
    "optimizer": "supernet optimizer: sgd (Nesterov) or adamw",
    "sampling": "paths per step: sandwich, uniform (SPOS) or fair (FairNAS: every choice once per step); "
                "None: the supernet's own",
    "warmup": "supernet steps of linear learning-rate warm-up before the cosine decay",
    "n_startup_trials": "random trials before the sampler models the history",
    "multivariate": "one joint model over all decisions (multivariate TPE)",
    "constant_liar": "treat running trials as bad, so parallel workers ask different archs",
    "pool": "archs ranked by the proxy before any evaluation",
    "proxy": "zero-cost proxy that ranks the pool",
    "proxy_resolution": "input resolution the proxy scores at (None: the space's)",
    "proxy_batch": "batch size the proxy scores with",
    "members": "proxies of an ensemble proxy",
    "progress": "show progress bars",
    "checkpoint_every": "training state written every this many steps, for resuming (0: after each epoch only)",
    "memory_gb": "train_size=auto trains the proxy when the searched size needs more memory than this",
    "screen": "evolution without latency tables: archs ranked per ask by a Gaussian process, the best kept (1: off)",
    "explore": "evolution screening: share of the ranked archs that are random feasible ones (the rest: children)",
    "init": "bo: random feasible trials before the Gaussian process ranks archs",
    "points": "bo: most trials the Gaussian process is fitted to",
    "ranked": "bo: most unevaluated archs scored per ask",
}

EVALUATOR_SUMMARIES = {
    "zero-cost": f"training-free proxy score at initialisation (proxy={DEFAULT_PROXY} unless "
                 f"--evaluator-option proxy=NAME: synflow, naswot, snip, grad_norm, jacob_cov, fisher, params, "
                 f"flops, ensemble)",
    "train": "validation accuracy after a short training on --dataset (--epochs, --batch-size)",
    "supernet": "accuracy of the arch's path in a trained supernet checkpoint (checkpoint=PATH)",
    "tabular": "ground-truth accuracy from the shipped benchmark tables (nats_sss; nb201 with -o candidates=naslib)",
    "predictor": "predicted ImageNet top-1 of ofa_mbv3 archs (224 px): a model fitted on the shipped DyNAS-T "
                 "measurements (model=gbt or ridge)",
}
_HIDDEN = {"self", "space", "seed", "feasible", "kwargs", "args"}


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].rstrip(".") if lines else ""


def _defaults(*functions: Callable[..., Any]) -> dict[str, Any]:
    """Keyword options and their defaults of `functions` (first one wins), hidden names left out."""
    out: dict[str, Any] = {}
    for fn in functions:
        for name, p in inspect.signature(fn).parameters.items():
            if name in _HIDDEN or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or name in out:
                continue
            out[name] = None if p.default is p.empty else p.default
    return out


def strategy_options(cls: type) -> dict[str, Any]:
    """Every option the strategy's constructors take (its class first, then its bases)."""
    inits = [k.__dict__["__init__"] for k in cls.__mro__ if k is not object and "__init__" in k.__dict__]
    out = _defaults(*inits)
    # weight-sharing strategies: size options default to None (= not given; see nas.strategies.train_size)
    for name, value in {**getattr(cls, "proxy_size", {}), "train_size": getattr(cls, "default_train_size", None)}.items():
        if name in out and out[name] is None:
            out[name] = value
    return out


def _options_text(options: dict[str, Any], limit: int = 6) -> str:
    items = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in options.items()]
    more = f", ... ({len(items) - limit} more with --verbose)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more if items else "(none)"


def spaces() -> list[dict[str, Any]]:
    from search_spaces.catalog import SPACES, get_space
    rows = []
    for name in SPACES.names():
        cls = SPACES.get(name)
        sp = get_space(name)
        size = sp.size()
        rows.append({"name": name, "kind": "space", "about": _first_line(sys.modules[cls.__module__].__doc__),
                     "decisions": len(sp.decisions), "log10_size": round(math.log10(size), 1) if size > 0 else 0.0,
                     "presets": sorted(sp.presets), "options": sp.options()})
    return rows


def strategies() -> list[dict[str, Any]]:
    from nas.strategies.catalog import STRATEGIES
    rows = []
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        about = STRATEGY_SUMMARIES.get(name) or _first_line(cls.__doc__) or _first_line(
            sys.modules[cls.__module__].__doc__)
        rows.append({"name": name, "kind": "strategy", "about": about, "default": name == DEFAULT_STRATEGY,
                     "weight_sharing": bool(getattr(cls, "weight_sharing", False)),
                     "spaces": cls.supported_text(),
                     "options": strategy_options(cls)})
    return rows


def evaluators(verbose: bool = False) -> list[dict[str, Any]]:
    """Evaluator rows; their options only with `verbose` (reading them imports the evaluators)."""
    from nas.evaluators.catalog import EVALUATORS
    rows = []
    for name in EVALUATORS.names():
        row: dict[str, Any] = {"name": name, "kind": "evaluator", "default": name == DEFAULT_EVALUATOR,
                               "about": EVALUATOR_SUMMARIES.get(name) or _first_line(EVALUATORS.get(name).__doc__)}
        if verbose:
            row["options"] = _evaluator_options(name)
        rows.append(row)
    return rows


def _evaluator_options(name: str) -> dict[str, Any]:
    if name == "zero-cost":
        from nas.evaluators.zero_cost import ZeroCostEvaluator
        return _defaults(ZeroCostEvaluator.__init__)
    if name == "train":
        from nas.evaluators.training import TrainEvaluator
        return _defaults(TrainEvaluator.__init__)
    if name == "supernet":
        from nas.supernet.trainer import supernet_evaluator_from_checkpoint
        return _defaults(supernet_evaluator_from_checkpoint)
    if name == "tabular":
        return {"dataset": "cifar10"}
    if name == "predictor":
        return {"model": "gbt", "dataset": "imagenet"}
    from nas.evaluators.catalog import EVALUATORS
    return _defaults(EVALUATORS.get(name))


def targets() -> list[dict[str, Any]]:
    from latency.measured import BENCH_OPTIONS, measured_targets, shipped_metadata
    from latency.targets import HOSTS, load_table, model_targets, target_names, target_spaces
    rows = []
    models, measured = model_targets(), measured_targets()
    for t in target_names():
        for sp in target_spaces(t):
            if t not in HOSTS and t not in models and sp in measured.get(t, ()):   # what load_table would pick,
                m, space, options = shipped_metadata(t), sp, BENCH_OPTIONS             # without its 15,625 rows
            else:
                table = load_table(t, sp)
                m, space, options = table.metadata, table.space, table.space_options
            rows.append({"target": t, "kind": "target", "space": space,
                         "space_options": _non_default(space, options), "device": m.get("device"),
                         "source": m.get("source"),
                         "runtime": f"{m.get('runtime')} {m.get('runtime_version', '')}".strip(),
                         "provider": m.get("provider"), "threads": m.get("threads"), "date": m.get("date"),
                         "units": m.get("units", "ms"), "batch": m.get("batch"),
                         "matches": models[t].publications if t in models else m.get("publications"),
                         "made": _made(m)})
    return rows


def _made(m: dict[str, Any]) -> str | None:
    """When and under what load a measured (host) table was profiled, for `nas list targets`."""
    if m.get("source") != "measured":
        return None
    start, end = m.get("load_at_start"), m.get("load_at_end")
    load = (f"load at start: {start}" + (f"; at end: {end}" if end else "")) if start else "load not recorded"
    check = m.get("quiet_check")   # latency/host_check.py: a table profiled busy, re-timed quiet
    said = {"passed": "; busy, checked against a quiet re-timing: {median_ratio}x", "pending": "; busy, not yet "
            "checked against a quiet re-timing", "reprofiled": "; re-profiled quiet (the busy one read {ratio}x)"}
    extra = said.get(check.get("status", ""), "").format(
        ratio=(check.get("busy_table") or {}).get("median_ratio"), **check) if isinstance(check, dict) else ""
    return f"{m.get('date') or 'date not recorded'}, {m.get('clock', 'wall')} clock, {load}{extra}"


def _non_default(space: str, options: Any) -> dict[str, Any]:
    """The options of a table that differ from the space's defaults (e.g. {"variant": "darts"})."""
    from search_spaces.catalog import get_space
    try:
        default = get_space(space).options()
    except NasError:
        return dict(options or {})
    return {k: v for k, v in sorted(dict(options or {}).items()) if default.get(k) != v}


def _space_label(r: dict[str, Any]) -> str:
    other = r.get("space_options") or {}
    return r["space"] + (f" ({', '.join(f'{k}={v}' for k, v in other.items())})" if other else "")


def lines(what: str, rows: list[dict[str, Any]], verbose: bool = False) -> list[str]:
    """Human lines of one section: one per entry (and one per option with `verbose`)."""
    out = []
    width = max([11] + [len(_space_label(r)) for r in rows if what == "targets"])
    for r in rows:
        if what == "targets":
            run = (f"{r['runtime']} {r['provider'] or ''} threads={r['threads']}" if r["threads"] is not None
                   else r["runtime"])
            out.append(f"{r['target']:<14} {_space_label(r):<{width}} {r['source'] or '':<9} {r['device']} | {r['units']}, "
                       f"batch {r['batch']} | {run} {r['date'] or ''}".rstrip())
            if r.get("made"):
                out.append(f"{'':<15}made: {r['made']}")
            if r.get("matches") and r is next(x for x in rows if x["target"] == r["target"]):
                out.append(f"{'':<15}matches the publications of: {r['matches']}")
            continue
        mark = " [default]" if r.get("default") else ""
        head = f"{r['name']:<12} {r['about']}{mark}"   # a space even after a long name
        if what == "spaces":
            head += (f"; {r['decisions']} decisions, ~10^{r['log10_size']} archs; presets: "
                     f"{', '.join(r['presets']) or '-'}")
        if what == "strategies":
            head += f"; spaces: {r['spaces']}"
        options = r.get("options")
        if options is None:
            out.append(head + "; options: see --verbose")
        elif verbose:
            out.append(head)
            helps = OPTION_HELP if what == "strategies" else {}
            out += [f"{'':<13}  {f'{k} = {v!r}':<28}{'  ' + helps[k] if k in helps else ''}".rstrip()
                    for k, v in options.items()] or [f"{'':<13}  (no options)"]
        else:
            out.append(f"{head}; options: {_options_text(options)}")
    return out
