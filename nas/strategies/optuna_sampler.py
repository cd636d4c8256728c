"""Optuna samplers behind ask/tell: `tpe` (Bergstra et al. 2011; MOTPE with several objectives)
and `optuna-nsga2` (Optuna's NSGA-II).

    nas search --strategy tpe
    nas search --strategy optuna-nsga2 --strategy-option objectives=score:max,latency_ms:min

Each decision of the space is a categorical parameter over its choice indices. The in-memory
study is derived from the history: it is built on the first `ask` by replaying every finished
trial (enqueue its params, ask, tell its objective values - so samplers that keep per-trial
bookkeeping, such as NSGA-II's generations, see the same records as in an uninterrupted run), with
a sampler seed derived from (seed, number of trials), and later results are told to the Optuna
trial that proposed them.

A proposal that is not a valid arch is told FAIL; if the space offers `canonicalize(genes)` (e.g.
to zero inactive genes), the repaired arch is enqueued and asked next instead. A proposal that
breaks the latency constraint is told PRUNED (TPE counts pruned trials among the bad ones, so it
learns to avoid the infeasible region); a proposal already evaluated is told FAIL (ignored) and
asked again. After `max_retries` rejected proposals in a row the arch is a random feasible one,
enqueued so the study still records it (counted in `stats["random"]`, logged, and reported in the
search summary's `strategy_stats`).

On a candidate list (nb201's `candidates=naslib`, `--candidates FILE`) the sampler still proposes
over the space's decisions, but a proposal outside the list, infeasible or already evaluated is
*projected*: the study is told it failed (or was pruned) and the nearest candidate to it (fewest
genes differing, ties at random) that is feasible and new is enqueued and evaluated instead, so the
search stays where the sampler points rather than falling back to random archs. Each projection
counts in `stats["replaced"]` (of `stats["proposals"]`).

TPE defaults to the multivariate variant (one joint Parzen estimator over all decisions): on the
mbconv space it needed fewer proposals per accepted arch under a constraint and each proposal was
several times cheaper than independent TPE's per-parameter estimators.
"""
from __future__ import annotations

import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.strategies.base import Strategy
from nas.strategies.nsga2 import DEFAULT_SECOND_OBJECTIVE
from nas.store.trial import Trial

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


class OptunaStrategy(Strategy):
    """Base of the Optuna-backed strategies; subclasses make the sampler."""

    name = "optuna"
    #: run the sampler's relative step for enqueued (replayed or repaired) trials too
    replay_relative: bool = False

    def __init__(self, space, *, max_retries: int = 10, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
        import optuna
        super().__init__(space, **kwargs)
        if int(max_retries) < 1:
            raise UsageError(f"max_retries must be at least 1, got {max_retries}")
        self.max_retries = int(max_retries)
        self._dists: dict[str, optuna.distributions.BaseDistribution] = {
            d.name: optuna.distributions.CategoricalDistribution(list(range(len(d.choices)))) for d in space.decisions}
        self._study: optuna.Study | None = None
        self._pending: dict[Arch, list[int]] = {}
        self.stats.update(proposals=0, replaced=0, random=0)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial otherwise

    # ---- to implement -------------------------------------------------------------------------
    def make_sampler(self, seed: int) -> "optuna.samplers.BaseSampler":
        raise NotImplementedError

    # ---- study <-> history -------------------------------------------------------------------
    def _params(self, arch: Arch) -> dict[str, int]:
        return {d.name: d.choices.index(g) for d, g in zip(self.space.decisions, arch.genes)}

    def _values(self, trial: Trial) -> list[float] | None:
        if not trial.ok:
            return None
        vals = [trial.value(m) for m, _ in self.objectives]
        return None if any(math.isnan(v) or math.isinf(v) for v in vals) else vals

    def _tell(self, number: int, trial: Trial | None, state: str = "fail") -> None:
        import optuna
        assert self._study is not None
        values = self._values(trial) if trial is not None else None
        if values is not None:
            self._study.tell(number, values)
        else:
            self._study.tell(number, state=optuna.trial.TrialState.PRUNED if state == "pruned"
                             else optuna.trial.TrialState.FAIL)

    def _ask_fixed(self, arch: Arch) -> int:
        """Ask the study for exactly `arch` (enqueued params); returns the Optuna trial number."""
        assert self._study is not None
        self._study.enqueue_trial(self._params(arch), skip_if_exists=False)
        trial = self._study.ask(self._dists)
        if self.replay_relative:
            # Optuna skips the sampler's relative step when every param is fixed; samplers that
            # record state there (NSGA-II's generation number) need it to run
            trial.relative_params  # noqa: B018
        return trial.number

    def _ensure_study(self) -> "optuna.Study":
        import optuna
        if self._study is None:
            seed = int(np.random.default_rng([self.seed, len(self.history)]).integers(2**31 - 1))
            directions = [optuna.study.StudyDirection.MAXIMIZE if mx else optuna.study.StudyDirection.MINIMIZE
                          for _, mx in self.objectives]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._study = optuna.create_study(directions=directions, sampler=self.make_sampler(seed))
            for t in self.history:
                self._tell(self._ask_fixed(t.arch), t)
        return self._study

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        if self._study is None:
            return
        numbers = self._pending.get(trial.arch)
        number = numbers.pop(0) if numbers else self._ask_fixed(trial.arch)
        if numbers == []:
            del self._pending[trial.arch]
        self._tell(number, trial)

    def rebuild(self, trials: Sequence[Trial]) -> None:
        self._study, self._pending = None, {}
        super().rebuild(trials)

    # ---- ask -----------------------------------------------------------------------------------
    def _repair(self, genes: list[Any]) -> Arch | None:
        fix = getattr(self.space, "canonicalize", None)
        if fix is None:
            return None
        try:
            return self.space.validate(fix(genes))
        except ArchError:
            return None

    def ask(self) -> Arch:
        import optuna
        study = self._ensure_study()
        candidates = getattr(self.space, "_candidates", None)
        genes: list[Any] = []
        for _ in range(self.max_retries):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ot = study.ask(self._dists)
            self.stats["proposals"] += 1
            genes = [d.choices[ot.params[d.name]] for d in self.space.decisions]
            try:
                arch = self.space.make(genes)
            except ArchError:
                self._tell(ot.number, None, "fail")
                if candidates is not None:
                    return self._project(genes, candidates)
                fixed = self._repair(genes)
                if fixed is not None and fixed not in self.seen and self.feasible(fixed):
                    study.enqueue_trial(self._params(fixed), skip_if_exists=False)
                continue
            if not self.feasible(arch):
                self._tell(ot.number, None, "pruned")
                if candidates is not None:
                    return self._project(genes, candidates)
                continue
            if arch in self.seen or arch in self._pending or arch in self.pending:
                self._tell(ot.number, None, "fail")
                if candidates is not None:
                    return self._project(genes, candidates)
                continue
            self._pending.setdefault(arch, []).append(ot.number)
            return arch
        arch = self.sample_feasible()
        self.stats["random"] += 1
        if self.stats["random"] in (1, 10, 100, 1000):
            log.info("%s: %d proposals rejected in a row; asked a random feasible arch (%d times so far)",
                     self.name, self.max_retries, self.stats["random"])
        self._pending.setdefault(arch, []).append(self._ask_fixed(arch))
        return arch

    def _project(self, genes: list[Any], candidates: Any) -> Arch:
        """The candidate nearest to the proposal `genes` (fewest genes differing, ties at random) that is
        feasible and new; the study records it as an enqueued trial, so the sampler learns from the arch
        actually evaluated. Counted in `stats["replaced"]`."""
        self.stats["replaced"] += 1
        for i in candidates.by_distance(genes, self.rng):
            arch = candidates.archs[int(i)]
            if self.is_new(arch) and arch not in self._pending and self.feasible(arch):
                self._pending.setdefault(arch, []).append(self._ask_fixed(arch))
                return arch
        arch = self.sample_feasible()   # every candidate is evaluated or infeasible: a repeat
        self._pending.setdefault(arch, []).append(self._ask_fixed(arch))
        return arch


class TPE(OptunaStrategy):
    name = "tpe"

    def __init__(self, space, *, n_startup_trials: int = 10, multivariate: bool = True,  # type: ignore[no-untyped-def]
                 constant_liar: bool = True, **kwargs: Any) -> None:
        if int(n_startup_trials) < 1:
            raise UsageError(f"tpe n_startup_trials must be at least 1, got {n_startup_trials}")
        self.n_startup_trials, self.multivariate = int(n_startup_trials), bool(multivariate)
        self.constant_liar = bool(constant_liar)  # parallel workers: pending trials count as bad
        super().__init__(space, **kwargs)

    def make_sampler(self, seed: int) -> "optuna.samplers.BaseSampler":
        import optuna
        return optuna.samplers.TPESampler(n_startup_trials=self.n_startup_trials, multivariate=self.multivariate,
                                          constant_liar=self.constant_liar, seed=seed)


class OptunaNSGA2(OptunaStrategy):
    name = "optuna-nsga2"
    replay_relative = True

    def __init__(self, space, *, population: int = 20, **kwargs: Any) -> None:  # type: ignore[no-untyped-def]
        if kwargs.get("objectives") is None:
            kwargs["objectives"] = ((kwargs.pop("metric", "score"), bool(kwargs.pop("maximize", True))),
                                    DEFAULT_SECOND_OBJECTIVE)
        if int(population) < 2:
            raise UsageError(f"optuna-nsga2 needs population >= 2, got {population}")
        self.population = int(population)
        super().__init__(space, **kwargs)

    def make_sampler(self, seed: int) -> "optuna.samplers.BaseSampler":
        import optuna
        return optuna.samplers.NSGAIISampler(population_size=self.population, seed=seed)
