"""Strategy interface (ask/tell) and the context of the optional training phase.

A strategy proposes archs (`ask`) and learns from finished trials (`tell`). Its state must be a
function of the trials told so far, so `rebuild(trials)` restores it after a crash and the same
strategy can run serially or with parallel workers. A weight-sharing strategy trains first:
`prepare(ctx)` returns the evaluator its trials use (ordinary strategies return None and the search's
evaluator is used). The registry of named strategies is `nas.strategies.catalog`.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, Union

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import SearchError, UsageError
from nas.core.space import SearchSpace
from nas.store.trial import Trial

Feasible = Callable[[Arch], bool]
Evaluator = Callable[[Arch], dict[str, float]]
Objectives = tuple[tuple[str, bool], ...]
ObjectivesSpec = Union[Objectives, Sequence[Sequence[object]], str, None]
_DIRECTIONS = {"max": True, "maximize": True, "min": False, "minimize": False}


def parse_objectives(spec: ObjectivesSpec) -> Objectives:
    """Objectives from pairs [("score", True), ("latency_ms", False)] or "score:max,latency_ms:min"."""
    def from_text(part: str) -> tuple[str, object]:
        name, _, direction = part.strip().partition(":")
        return name.strip(), direction.strip().lower() or "max"

    if isinstance(spec, str):
        pairs: list[tuple[object, ...]] = [from_text(p) for p in spec.split(",")]
    else:
        try:
            pairs = [from_text(p) if isinstance(p, str) else tuple(p) for p in spec or ()]  # type: ignore[union-attr]
        except TypeError:
            raise UsageError(f"objectives {spec!r} must be (metric, maximize) pairs or a string like "
                             f"'score:max,latency_ms:min'") from None
    out: list[tuple[str, bool]] = []
    for pair in pairs:
        if len(pair) != 2 or not isinstance(pair[0], str) or not pair[0]:
            raise UsageError(f"objective {pair!r} must be (metric, maximize), e.g. 'score:max,latency_ms:min'")
        name, direction = str(pair[0]), pair[1]
        if isinstance(direction, str):
            if direction not in _DIRECTIONS:
                raise UsageError(f"objective {name!r}: direction {direction!r} unknown; valid: max, min")
            direction = _DIRECTIONS[direction]
        out.append((name, bool(direction)))
    if not out or len({n for n, _ in out}) != len(out):
        raise UsageError(f"objectives {spec!r} must name at least one metric, each once")
    return tuple(out)


@dataclass(frozen=True)
class TrainContext:
    """What a weight-sharing strategy needs to train: the searched space, its latency models and
    bounds (target -> LUTModel / ms), the dataset and run settings."""

    space: SearchSpace
    latency: Mapping[str, Any] = field(default_factory=dict)
    bounds: Mapping[str, float] = field(default_factory=dict)
    dataset: str = "digits"
    epochs: int | None = None
    batch_size: int | None = None
    device: str = "cpu"
    seed: int = 0
    out: Path | None = None
    progress: bool = True
    #: nas.training.distributed.DistContext under torchrun (data-parallel training), else None
    dist: Any = None
    #: continue training saved in `out` (False: --no-resume, start over)
    resume: bool = True

    def load(self, split: str, resolution: int) -> tuple[Any, Any]:
        from nas.training.data import load_dataset
        return load_dataset(self.dataset, split=split, seed=self.seed, resolution=resolution)

    def num_classes(self) -> int:
        from nas.training.data import num_classes
        return num_classes(self.dataset)


class Strategy(ABC):
    name: ClassVar[str]
    #: trains shared weights in `prepare` (one process: --runner local only)
    weight_sharing: ClassVar[bool] = False
    #: finds archs only through the space's sample / mutate / validate, so a candidate list
    #: (`--candidates FILE`) restricts it; False for solvers and derivations that ignore it
    follows_candidates: ClassVar[bool] = True

    def __init__(self, space: SearchSpace, *, seed: int = 0, metric: str = "score", maximize: bool = True,
                 feasible: Feasible | None = None, objectives: ObjectivesSpec = None) -> None:
        """`objectives`: (metric, maximize) pairs, or a string like "score:max,latency_ms:min".
        The first objective is the one `metric`/`maximize`/`fitness` refer to; when omitted,
        the single objective is (`metric`, `maximize`)."""
        objs = parse_objectives(objectives) if objectives is not None else None
        if objs is not None:
            metric, maximize = objs[0]
        self.objectives: Objectives = objs or ((metric, bool(maximize)),)
        self.space, self.seed, self.metric, self.maximize = space, seed, metric, maximize
        self.feasible: Feasible = feasible or (lambda arch: True)
        self.rng = np.random.default_rng(seed)
        self.history: list[Trial] = []
        self.seen: set[Arch] = set()       # archs told (evaluated)
        self.pending: set[Arch] = set()    # archs handed out and not told yet (in flight on a runner)
        self.info: dict[str, Any] = {}     # what a training phase reports (best.json's `training`)
        self.stats: dict[str, Any] = {}    # counts of how the search proposed (summary's `strategy_stats`)

    @abstractmethod
    def ask(self) -> Arch:
        ...

    # ---- which spaces it searches -------------------------------------------------------------
    @classmethod
    def supported_spaces(cls) -> tuple[str, ...] | None:
        """Names of the spaces this strategy searches; None: every space."""
        return None

    @classmethod
    def supports(cls, space: SearchSpace) -> bool:
        names = cls.supported_spaces()
        return names is None or space.name in names

    @classmethod
    def supported_text(cls) -> str:
        """The supported spaces in words (`nas list strategies`, the unsupported-pair error)."""
        names = cls.supported_spaces()
        return "every space" if names is None else ", ".join(names)

    @classmethod
    def require(cls, space: SearchSpace) -> None:
        """Raise UsageError naming the supported spaces when `space` is not one of them."""
        if not cls.supports(space):
            variant = getattr(space, "variant", None)
            which = f"{space.name!r}" + (f" with variant={variant}" if variant else "")
            raise UsageError(f"strategy {cls.name!r} cannot search space {which}; spaces it searches: "
                             f"{cls.supported_text()}")

    # ---- the search pipeline's hooks (ordinary strategies: no training phase) -----------------
    def prepare(self, ctx: TrainContext) -> Evaluator | None:
        """Train on ctx's data and return the evaluator of the trials; None: use the search's evaluator."""
        return None

    def trials(self, requested: int) -> int:
        """How many trials the run makes when `requested` are asked for."""
        return requested

    def inherited(self, arch: Arch) -> tuple[SearchSpace, dict[str, Any]] | None:
        """(training space, state dict for training_space.build(arch)) of a scored arch, if any."""
        return None

    def tell(self, trial: Trial) -> None:
        self.history.append(trial)
        self.seen.add(trial.arch)
        self.pending.discard(trial.arch)

    def mark_asked(self, arch: Arch) -> None:
        """The runner hands `arch` out: until told, asks should not propose it again."""
        self.pending.add(arch)

    def is_new(self, arch: Arch) -> bool:
        """Neither evaluated nor in flight."""
        return arch not in self.seen and arch not in self.pending

    def rebuild(self, trials: Sequence[Trial]) -> None:
        for t in sorted(trials, key=lambda t: t.number):
            self.tell(t)
        # advance the generator past the draws made so far, so a resumed run does not repeat them
        self.rng = np.random.default_rng([self.seed, len(self.history)])

    # ---- helpers for subclasses --------------------------------------------------------------
    def fitness(self, trial: Trial) -> float:
        """Higher is better; failed trials and NaNs rank last."""
        v = trial.value(self.metric) if trial.ok else math.nan
        if math.isnan(v):
            return -math.inf
        return v if self.maximize else -v

    def objective_values(self, trial: Trial) -> np.ndarray | None:
        """The trial's objectives as a vector to minimise (maximised ones negated); None when the
        trial failed or lacks one of them."""
        if not trial.ok:
            return None
        vals = [trial.value(m) for m, _ in self.objectives]
        if any(math.isnan(v) for v in vals):
            return None
        return np.array([-v if mx else v for v, (_, mx) in zip(vals, self.objectives)], dtype=np.float64)

    def sample_feasible(self, tries: int = 10_000) -> Arch:
        """A random arch that meets the constraints, preferring ones not evaluated yet."""
        fallback = None
        for _ in range(tries):
            arch = self.space.sample(self.rng)
            if self.feasible(arch):
                if self.is_new(arch):
                    return arch
                fallback = arch
        if fallback is not None:
            return fallback
        budget = getattr(self, "constraint_budget", None)   # nas.strategies.constraints.Budget, set by the search
        if budget:
            closest = budget.closest([self.space.sample(self.rng) for _ in range(200)])
            got = budget.metrics(closest)
            raise SearchError(f"no {self.space.name} arch out of {tries} random samples meets "
                              f"{', '.join(map(str, budget.bounds))}; closest found: {self.space.format(closest)} "
                              f"({', '.join(f'{b.label}={got[b.key]:.4g}' for b in budget.bounds)})")
        raise SearchError(f"no {self.space.name} arch out of {tries} random samples meets the constraints; "
                          f"loosen the latency bound")
