"""`search()`: put a space, targets, a strategy, an evaluator and a store together and run.

This is what `nas search` calls; it is also the Python entry point:

    from nas.search import SearchConfig, search
    result = search(SearchConfig(space="mbconv", targets=("pixel1",), latency_ms=(80.0,), trials=50))
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from nas.errors import SearchError, UsageError
from nas.runner import Constraint, best_trial, run_search
from nas.trial import MemoryStore, Trial, TrialStore

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
    storage: str | None = None               # Optuna storage URL / journal:PATH / jsonl:PATH (default DIR/trials.db)
    study: str | None = None                 # study name (default: the --out folder's name)
    runner: str = "local"                    # local | ray
    workers: int | None = None               # Ray: evaluations in flight (default: the cluster's CPUs)
    address: str | None = None               # Ray: cluster address (default: start an embedded Ray)
    max_retries: int = 2                     # re-evaluations of a trial whose worker/process died
    store_params: bool = True                # decisions as Optuna params (dashboard plots; slower writes)
    dataset: str | None = None               # data of training-based steps / data-aware proxies (default digits)
    epochs: int | None = None                # training epochs (supernet, single-path, darts, train evaluator)
    batch_size: int | None = None
    device: str | None = None                # torch device for training and proxies: cpu (default) or cuda


def training_settings(cfg: SearchConfig) -> dict[str, Any]:
    """The search-wide training settings given (not None)."""
    return {k: v for k, v in (("dataset", cfg.dataset), ("epochs", cfg.epochs), ("batch_size", cfg.batch_size),
                              ("device", cfg.device)) if v is not None}


#: settings that may change when a search is resumed (the rest must match the stored config)
RUN_SETTINGS = ("trials", "out", "resume", "storage", "study", "runner", "workers", "address", "max_retries",
                "store_params", "device")
RUNNERS = ("local", "ray")


@dataclass
class SearchResult:
    config: SearchConfig
    trials: list[Trial]
    best: Trial | None
    summary: dict[str, Any]
    seconds: float


def search(cfg: SearchConfig, progress: bool = True) -> SearchResult:
    from latency.targets import lut_model
    from nas.evaluators import Compose, LatencyEvaluator, make_evaluator, with_training_settings
    from nas.strategies import STRATEGIES
    from search_spaces import get_space

    if cfg.trials < 1:
        raise UsageError(f"--trials must be at least 1, got {cfg.trials}")
    if not cfg.targets:
        raise UsageError("at least one --target is needed")
    if cfg.runner not in RUNNERS:
        raise UsageError(f"unknown runner {cfg.runner!r}; valid runners: {', '.join(RUNNERS)}")
    if cfg.runner == "local" and (cfg.workers is not None or cfg.address):
        raise UsageError("--workers and --address are for --runner ray")
    if cfg.workers is not None and cfg.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {cfg.workers}")
    if cfg.max_retries < 0:
        raise UsageError(f"--max-retries must be at least 0, got {cfg.max_retries}")
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if cfg.device is not None and cfg.device.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"--device {cfg.device!r} unknown; valid: cpu, cuda, cuda:N")
    if len(cfg.latency_ms) > len(cfg.targets):
        raise UsageError(f"{len(cfg.latency_ms)} latency bounds given for {len(cfg.targets)} targets")
    t0 = time.perf_counter()
    space = get_space(cfg.space, **cfg.space_options)
    strategy_cls = STRATEGIES.get(cfg.strategy)
    if getattr(strategy_cls, "weight_sharing", False):  # train first, then search: nas/weight_sharing_search.py
        from nas.weight_sharing_search import weight_sharing_search
        return weight_sharing_search(cfg, space, progress, t0)
    models = {t: lut_model(t, space) for t in cfg.targets}
    constraints, _, feasible = latency_constraints(cfg, models)

    strategy = _construct("strategy", cfg.strategy, strategy_cls, space, seed=cfg.seed, feasible=feasible,
                          **cfg.strategy_options)
    ev_options = with_training_settings(cfg.evaluator, cfg.evaluator_options, training_settings(cfg))
    evaluator = Compose([LatencyEvaluator(models), _construct("evaluator", cfg.evaluator, make_evaluator,
                                                              cfg.evaluator, space, seed=cfg.seed, **ev_options)])
    out = Path(cfg.out) if cfg.out else None
    store = open_search_store(cfg, space, strategy)
    _check_resume(out, store, cfg)
    if cfg.runner == "ray":
        from nas.ray_runner import run_ray_search
        trials = run_ray_search(strategy, evaluator, cfg.trials, store, resume=cfg.resume, progress=progress,
                                workers=cfg.workers, address=cfg.address, max_retries=cfg.max_retries)
    else:
        trials = run_search(strategy, evaluator, cfg.trials, store, resume=cfg.resume, progress=progress,
                            max_retries=cfg.max_retries)
    best = best_trial(trials, strategy.metric, strategy.maximize, constraints)
    seconds = time.perf_counter() - t0
    summary = _summary(cfg, space, best, trials, constraints, seconds)
    if out is not None and best is not None:
        from latency.table import atomic_write_text
        atomic_write_text(out / "best.json", json.dumps(summary, indent=1) + "\n")
    return SearchResult(cfg, trials, best, summary, seconds)


def latency_constraints(cfg: SearchConfig, models: dict[str, Any]
                        ) -> tuple[list[Constraint], dict[str, float], Callable[[Any], bool]]:
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

    def feasible(arch: Any) -> bool:
        return all(models[t].predict(arch) <= b for t, b in bounds.items())

    return constraints, bounds, feasible


def _construct(kind: str, name: str, factory: Any, *args: Any, **options: Any) -> Any:
    """Build a strategy/evaluator from user options; a wrong option name or type is a usage error."""
    try:
        return factory(*args, **options)
    except (TypeError, ValueError) as exc:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items() if k not in ("seed", "feasible")) or "none"
        raise UsageError(f"{kind} {name!r} cannot take the options given ({given}): {exc}") from None


def resume_config(folder: str | Path, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """The config of the search in `folder` (its config.json), to continue it; `overrides` replace
    stored values (settings other than RUN_SETTINGS must still match, see `_check_resume`)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise UsageError(f"--resume {folder}: no config.json there; give the --out folder of a 'nas search'")
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--resume {folder}: cannot read {path} ({exc})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--resume {folder}: {path} is not a search config (a JSON object)")
    names = {f.name for f in fields(SearchConfig)}
    data = {k: v for k, v in saved.items() if k in names}
    data.update(overrides or {})
    for key in ("targets", "latency_ms"):
        if key in data:
            data[key] = tuple(data[key])
    data.update(out=str(folder), resume=True)
    try:
        return SearchConfig(**data)
    except TypeError as exc:
        raise UsageError(f"--resume {folder}: {path} is not a search config ({exc})") from None


def open_search_store(cfg: SearchConfig, space: Any = None, strategy: Any = None) -> TrialStore:
    """The search's store: --storage, else DIR/trials.db for --out, else memory."""
    from nas.store import default_spec, open_store
    spec = cfg.storage or default_spec(cfg.out)
    if spec is None:
        return MemoryStore()
    objectives = getattr(strategy, "objectives", None) or (
        ((strategy.metric, strategy.maximize),) if strategy is not None else (("score", True),))
    return open_store(spec, study_name(cfg), space=space, objectives=objectives, fresh=not cfg.resume,
                      params=cfg.store_params)


def study_name(cfg: SearchConfig) -> str:
    """--study, else the one recorded in DIR/config.json (survives renaming DIR), else DIR's name."""
    from nas.store import default_study
    if cfg.study:
        return cfg.study
    path = Path(cfg.out) / "config.json" if cfg.out else None
    if path is not None and path.exists():
        try:
            recorded = json.loads(path.read_text()).get("study")
        except (json.JSONDecodeError, AttributeError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            return recorded
    return default_study(cfg.out)


def config_dict(cfg: SearchConfig) -> dict[str, Any]:
    """The settings that define a search (JSON types), without the ones a resume may change."""
    return json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in RUN_SETTINGS}))


def _check_resume(out: Path | None, store: TrialStore, cfg: SearchConfig) -> None:
    """Store the config beside the trials (DIR/config.json and the study's attributes); refuse to
    resume a search made with other settings."""
    from latency.table import atomic_write_text
    mine = config_dict(cfg)
    path = out / "config.json" if out is not None else None
    olds = []
    if cfg.resume:
        if path is not None and path.exists():
            olds.append(json.loads(path.read_text()))
        if hasattr(store, "get_config") and store.get_config() is not None:
            olds.append(store.get_config())
    for old in olds:
        diff = sorted(k for k in set(old) | set(mine) if k not in RUN_SETTINGS and old.get(k) != mine.get(k))
        if diff:
            where = str(out) if out is not None else f"study {cfg.study!r}"
            raise UsageError(f"{where} holds a search with other settings ({', '.join(diff)}); "
                             f"use another --out/--study, the same settings, or --no-resume")
    saved = {**mine, "trials": cfg.trials, "storage": cfg.storage, "study": study_name(cfg)}
    if path is not None:
        atomic_write_text(path, json.dumps(saved, indent=1) + "\n")
    if hasattr(store, "set_config"):
        store.set_config(mine)


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
