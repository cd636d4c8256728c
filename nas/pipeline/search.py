"""The one search pipeline, for every strategy (`search()`).

    plan(cfg)       space, targets and their latency models (loaded once), constraints, strategy,
                    evaluator (`--evaluator`), store (settings checked against a resumed search
                    and written beside it); nothing is written before every setting is checked
    train(plan)     optional training phase: a weight-sharing strategy (supernet, single-path,
                    darts) trains and returns the evaluator of its trials
    run(plan, ev)   the ordinary ask/tell loop (local or Ray runner), trials into the store
    finish(...)     best trial under the constraints, summary, exports, best.json (nas/pipeline/result.py)

This is what `nas search` calls; from Python use `nas.search` (nas/api.py: same thread handling).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nas.core.arch import Arch
from nas.core.errors import NasError, SearchError, UsageError
from nas.core.files import atomic_write_text
from nas.core.space import SearchSpace
from nas.evaluators.base import Compose, Evaluator, LatencyEvaluator
from nas.pipeline.runner import Constraint, run_search
# the result half of the pipeline (nas/pipeline/result.py); its names stay importable from here
from nas.pipeline.result import (SearchResult, export_inherited, finish, quantize_finalists,  # noqa: F401 (re-exported)
                                 score_name)
from nas.pipeline.config import (RUN_SETTINGS, SearchConfig, check_config, config_dict, study_name,
                               training_settings)
from nas.strategies.base import Strategy, TrainContext
from nas.store.trial import MemoryStore, Trial, TrialStore

log = logging.getLogger(__name__)

__all__ = ["SearchConfig", "SearchPlan", "SearchResult", "search", "plan", "train", "run", "finish", "quantize_finalists",
           "score_name", "export_inherited"]


@dataclass
class SearchPlan:
    """Everything a search needs, loaded once."""

    cfg: SearchConfig
    space: SearchSpace
    models: dict[str, Any]                  # target -> latency model (targets without one are left out)
    constraints: list[Constraint]
    bounds: dict[str, float]                # target -> --latency-ms
    strategy: Strategy
    evaluator: Evaluator | None             # --evaluator; None when the training phase makes it
    store: TrialStore
    out: Path | None
    started: float
    #: (name, what its score is) of the evaluator a weight-sharing strategy trained (set by `train`)
    scored_by: tuple[str, str | None] | None = None
    #: every bound (--constraint and --latency-ms) as a nas.strategies.constraints.Budget
    budget: Any = None


def search(cfg: SearchConfig, progress: bool = True, dist: Any = None) -> SearchResult | None:
    """Run the whole pipeline, holding the run lock of a local store (nas/store/lock.py): a second
    search on the same --out is refused while this one runs.

    Under torchrun (`dist`: an active nas.training.distributed.DistContext) every rank plans and trains the
    weight-sharing strategy data-parallel; only rank 0 holds the lock, writes files and runs the
    trials. The other ranks return None once the training is over."""
    import contextlib

    from nas.store.lock import run_lock
    check_config(cfg)   # before the lock: a bad --out/--storage must not create a folder (plan checks again, cheap)
    if dist is not None and not dist.is_main:
        p = _planned(dist, lambda: plan(cfg, False, writer=False))
        train(p, False, dist)
        return None
    with contextlib.ExitStack() as stack:
        p = _planned(dist, lambda: (stack.enter_context(run_lock(cfg.storage, cfg.out)), plan(cfg, progress))[1])
        evaluator = train(p, progress, dist)
        trials = run(p, evaluator, progress)
        return finish(p, trials)


def _planned(dist: Any, make: Callable[[], "SearchPlan"]) -> "SearchPlan":
    """`make()` on rank 0 first, then on the others (a latency table profiled and cached by rank 0 is
    then found by the rest); when it fails on one rank every rank stops before the training."""
    if dist is None or not dist.active:
        return make()
    import nas.training.distributed as D
    made: SearchPlan | None = None
    for turn in (True, False):
        if dist.is_main == turn:
            try:
                made = make()
            except BaseException:
                D.agree(dist, False)
                raise
            D.agree(dist, True)
        elif not D.agree(dist, True):
            raise NasError(f"rank {dist.rank}: stopped, {'rank 0' if turn else 'another rank'} could not start "
                           f"the search (its message says why)")
    return made  # type: ignore[return-value]   # every rank made its plan in its turn


# ---- plan ----------------------------------------------------------------------------------------
def plan(cfg: SearchConfig, progress: bool = True, writer: bool = True) -> SearchPlan:
    """Load and check everything; `progress`: bars for slow loading (profiling this machine's cpu table).
    `writer=False` (torchrun ranks but 0): no store, no --out, nothing written."""
    from nas.strategies.problem import problem_options
    from nas.strategies.catalog import STRATEGIES
    from search_spaces.catalog import get_space

    check_config(cfg)
    if writer and cfg.out and cfg.storage is None:   # before any loading: another search's trials.db in --out
        refuse_foreign_store(Path(cfg.out), study_name(cfg))
    started = time.perf_counter()
    space = get_space(cfg.space, **cfg.space_options)
    strategy_cls = STRATEGIES.get(cfg.strategy)
    strategy_cls.require(space)
    candidates = getattr(space, "_candidates", None)
    if candidates is not None and not strategy_cls.follows_candidates:
        raise UsageError(f"strategy {cfg.strategy!r} does not search by sampling the space, so it cannot keep to "
                         f"the candidate list {candidates.source}; use evolution, random, tpe, nsga2 or zero-cost")
    if strategy_cls.weight_sharing and cfg.runner != "local":
        raise UsageError(f"--strategy {cfg.strategy} trains one shared net in this process; it runs with "
                         f"--runner local only (got --runner {cfg.runner})")
    if cfg.runner == "ray" and cfg.address and writer:   # an unreachable or refusing cluster: before writing
        from nas.cluster.ray_session import check_reachable
        from nas.cluster.ray_session import prepare_connection
        check_reachable(cfg.address)
        prepare_connection(cfg.address)
    models = _latency_models(cfg, space, progress)
    constraints, bounds, latency_ok = latency_constraints(cfg, models)
    # made before the budget: an evaluator that scores only part of the space (the predictor: its rows'
    # MACs range) declares it, and the search keeps to it as a constraint (repair and fill included)
    from nas.evaluators.base import valid_bounds
    evaluator = None if strategy_cls.weight_sharing else _make_evaluator(cfg, space)
    implied = valid_bounds(evaluator)
    if implied:
        log.info("evaluator %s scores archs with %s only: searched as constraints", cfg.evaluator,
                 ", ".join(f"{k}<={v:g}" for k, v in implied.items()))
    from nas.pipeline.budget import plan_budget
    budget = plan_budget(cfg, space, models, bounds, progress, implied)
    have = {(c.metric, c.bound) for c in constraints}
    constraints += [Constraint(b.key, b.value) for b in budget.bounds if (b.key, b.value) not in have]

    # the budget checks each --latency-ms bound itself (same model, cached per arch) unless a --constraint on
    # that target loosened it: then the bound is checked again here, else a second prediction would be waste
    held = {b.target: b.value for b in budget.bounds if b.metric == "latency_ms"}
    covered = all(t in held and held[t] <= ms for t, ms in bounds.items())

    def feasible(arch: Arch) -> bool:
        return budget.feasible(arch) if covered else latency_ok(arch) and budget.feasible(arch)
    options = _check_options(strategy_cls, cfg.strategy_options)
    # strategies that take the problem (exact, evolution's repair) see the tables, bounds and score
    problem = problem_options(strategy_cls, space, models, bounds, cfg.evaluator, cfg.evaluator_options)
    try:
        strategy = strategy_cls(space, seed=cfg.seed, feasible=feasible, **problem, **options)
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
        raise UsageError(f"strategy {cfg.strategy!r} cannot take the options given ({given}): {exc}") from None
    from nas.strategies.enforcement import attach
    attach(strategy, budget, bool(cfg.strategy_options.get("repair", True)))
    out = Path(cfg.out) if cfg.out and writer else None   # nothing is written before every setting was checked
    store = open_search_store(cfg, space, strategy) if writer else MemoryStore()
    if not writer:
        return SearchPlan(cfg, space, models, constraints, bounds, strategy, evaluator, store, out, started,
                          budget=budget)
    record_config(out, store, cfg)
    if hasattr(store, "set_constraints"):   # feasible vs infeasible in optuna-dashboard
        store.set_constraints([(c.metric, c.bound, c.upper) for c in constraints])
    return SearchPlan(cfg, space, models, constraints, bounds, strategy, evaluator, store, out, started,
                      budget=budget)


def _make_evaluator(cfg: SearchConfig, space: SearchSpace) -> Evaluator:
    from nas.evaluators.base import with_training_settings
    from nas.evaluators.catalog import make_evaluator
    options = with_training_settings(cfg.evaluator, cfg.evaluator_options, training_settings(cfg))
    try:
        return make_evaluator(cfg.evaluator, space, seed=cfg.seed, **options)
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
        raise UsageError(f"evaluator {cfg.evaluator!r} cannot take the options given ({given}): {exc}") from None


def _latency_models(cfg: SearchConfig, space: SearchSpace, progress: bool = True) -> dict[str, Any]:
    """One latency model per target. A target without a table for this space and its options is an
    error naming the command that makes one (never a blank latency), whatever the strategy."""
    from latency.targets import lut_model
    return {target: lut_model(target, space, progress) for target in cfg.targets}


def latency_constraints(cfg: SearchConfig, models: dict[str, Any]
                        ) -> tuple[list[Constraint], dict[str, float], Callable[[Arch], bool]]:
    """The `--latency-ms` bounds (one per leading `--target`): as constraints, as target -> ms, and as
    a feasibility test on archs.

    A bound that is not positive is a usage error; one below the fastest arch of the space on that target
    (the LUT model's `min_ms`) is impossible and fails before any trial runs.
    """
    constraints: list[Constraint] = []
    bounds: dict[str, float] = {}
    for target, bound in zip(cfg.targets, cfg.latency_ms):
        if not bound > 0:
            raise UsageError(f"--latency-ms must be positive, got {bound:g}")
        fastest = models[target].min_ms()
        if bound < fastest:
            raise SearchError(f"latency bound {bound:g} ms on {target} is impossible: the fastest {cfg.space} "
                              f"arch {'takes' if models[target].separable else 'found takes'} {fastest:.2f} ms there")
        constraints.append(Constraint(f"latency_ms.{target}", bound))
        bounds[target] = float(bound)

    def feasible(arch: Arch) -> bool:
        return all(models[t].predict(arch) <= b for t, b in bounds.items())

    return constraints, bounds, feasible


def _check_options(strategy_cls: type[Strategy], options: dict[str, Any]) -> dict[str, Any]:
    """Raise UsageError for an option no constructor in the strategy's class hierarchy takes."""
    import inspect
    valid: set[str] = set()
    for klass in strategy_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and klass is not object:
            valid |= {n for n, p in inspect.signature(init).parameters.items()
                      if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and n not in ("self", "space"))}
    valid -= {"seed", "feasible", "problem"}
    bad = sorted(set(options) - valid)
    if bad:
        raise UsageError(f"strategy {strategy_cls.name!r} has no option {bad[0]!r}; valid options: "
                         f"{', '.join(sorted(valid))}")
    from nas.pipeline.catalogue import strategy_options
    defaults = strategy_options(strategy_cls)
    for key, value in options.items():   # a number option given a string, list, ... (not a raw TypeError)
        default = defaults.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and not number:
            raise UsageError(f"strategy {strategy_cls.name!r} cannot take the options given ({key}="
                             f"{str(value)[:60]!r}): {key} must be a number (default {default})")
    return options


def open_search_store(cfg: SearchConfig, space: Any = None, strategy: Any = None) -> TrialStore:
    """The search's store: --storage, else DIR/trials.db for --out, else memory."""
    from nas.pipeline.cooperative import open_any_store   # shared studies for RDB servers and journals
    from nas.store.storage import default_spec
    spec = cfg.storage or default_spec(cfg.out)
    if spec is None:
        return MemoryStore()
    objectives = getattr(strategy, "objectives", None) or (
        ((strategy.metric, strategy.maximize),) if strategy is not None else (("score", True),))
    # a local SQLite file has one writer (the run lock): quick trials are written in batches
    local = {"batch": True} if spec.startswith("sqlite:///") else {}
    return open_any_store(spec, study_name(cfg), space=space, objectives=objectives, fresh=not cfg.resume,
                          params=cfg.store_params, heartbeat_s=cfg.heartbeat_s, **local)


def refuse_foreign_store(out: Path, study: str) -> None:
    """DIR/trials.db holding only other searches' studies (a file copied or left there): refuse it
    rather than add this search beside them (issue 29)."""
    from nas.store.storage import STORE_FILE, sqlite_study_names
    names = sqlite_study_names(out / STORE_FILE)
    if names and study not in names:
        shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise UsageError(f"--out {out}: {out / STORE_FILE} holds another search's study ({shown}), not this "
                         f"search's ({study!r}); use another --out, or --study {names[0]} to continue that one")


def record_config(out: Path | None, store: TrialStore, cfg: SearchConfig) -> None:
    """Store the config beside the trials (DIR/config.json and the study's attributes); refuse to
    resume a search made with other settings."""
    mine = config_dict(cfg)
    path = out / "config.json" if out is not None else None
    olds = []
    if cfg.resume:
        if path is not None and path.exists():
            from nas.pipeline.config import read_saved_config
            olds.append(read_saved_config(path))
        if hasattr(store, "get_config") and store.get_config() is not None:
            olds.append(store.get_config())
    for old in olds:
        diff = sorted(k for k in set(old) | set(mine) if k not in RUN_SETTINGS and old.get(k) != mine.get(k))
        if diff:
            from nas.store.errors import mask
            where = (f"study {study_name(cfg)!r} in {mask(cfg.storage)}" if cfg.storage else
                     str(out) if out is not None else f"study {cfg.study!r}")
            raise UsageError(f"{where} holds a search with other settings ({', '.join(diff)}); "
                             f"use another --out/--study, the same settings, or --no-resume")
    saved = {**mine, "trials": cfg.trials, "storage": cfg.storage, "study": study_name(cfg)}
    if path is not None:
        atomic_write_text(path, json.dumps(saved, indent=1) + "\n")
    if hasattr(store, "set_config"):
        store.set_config(mine)


# ---- optional training phase ---------------------------------------------------------------------
def train(p: SearchPlan, progress: bool = True, dist: Any = None) -> Evaluator:
    """The evaluator of the trials: what a weight-sharing strategy trained, else `--evaluator`;
    latency on every target with a model is added to its metrics. `dist`: the torchrun context."""
    cfg = p.cfg
    device = dist.device if dist is not None and dist.active else cfg.device or "cpu"
    ctx = TrainContext(space=p.space, latency=p.models, bounds=p.bounds,
                       # evaluator_options: where searches stored before --dataset existed keep it
                       dataset=cfg.dataset or cfg.evaluator_options.get("dataset") or "digits",
                       epochs=cfg.epochs, batch_size=cfg.batch_size, device=device,
                       seed=cfg.seed, out=p.out, progress=progress, dist=dist, resume=cfg.resume)
    trained = p.strategy.prepare(ctx)
    from nas.strategies.constraints import BudgetEvaluator
    from nas.strategies.enforcement import project_derived
    project_derived(p.strategy, p.budget)   # weight-sharing results end on the feasible set
    if trained is not None:   # the strategy's own evaluator scores the trials, not --evaluator
        p.scored_by = (str(getattr(trained, "name", cfg.strategy)), getattr(trained, "score_is", None))
    trained = p.evaluator if trained is None else trained
    if trained is None:
        raise NasError(f"strategy {cfg.strategy!r} trained nothing to score its trials with")
    parts = ([LatencyEvaluator(p.models)] if p.models else []) + [trained]
    if p.budget:   # last: the bounded metrics as the budget judged feasibility
        parts.append(BudgetEvaluator(p.budget))
    return Compose(parts) if len(parts) > 1 else trained


# ---- ask/tell run --------------------------------------------------------------------------------
def run(p: SearchPlan, evaluator: Evaluator, progress: bool = True) -> list[Trial]:
    cfg = p.cfg
    n = p.strategy.trials(cfg.trials)
    if n != cfg.trials:
        log.info("%s yields its derived arch as %d trial(s) (--trials %d ignored; refine=N adds evolution trials)",
                 cfg.strategy, n, cfg.trials)
    candidates = getattr(p.space, "_candidates", None)
    if candidates is not None and len(candidates) < n:   # more trials would evaluate the same archs again
        log.warning("--trials %d: the candidate list %s holds %d archs; %d trials, one per arch",
                    n, candidates.source, len(candidates), len(candidates))
        n = len(candidates)
    if cfg.runner == "ray":
        from nas.pipeline.ray_runner import run_ray_search
        return run_ray_search(p.strategy, evaluator, n, p.store, resume=cfg.resume, progress=progress,
                              workers=cfg.workers, address=cfg.address, max_retries=cfg.max_retries)
    if getattr(p.store, "shared", False):   # several searches on one study: nas/pipeline/cooperative.py
        from nas.pipeline.cooperative import run_cooperative
        return run_cooperative(p.strategy, evaluator, n, p.store, progress=progress,
                               max_retries=cfg.max_retries, heartbeat_s=cfg.heartbeat_s)
    return run_search(p.strategy, evaluator, n, p.store, resume=cfg.resume, progress=progress,
                      max_retries=cfg.max_retries)
