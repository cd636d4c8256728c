"""Cooperating searches: several `nas search` processes (on one host or many) working on one study.

Started with the same `--storage` (a PostgreSQL/MySQL URL or `journal:PATH` on a shared filesystem)
and `--study`, each search runs `run_cooperative` instead of the plain loop of nas/pipeline/runner.py:

    read the study -> tell the strategy what the others finished, mark what they run as asked
    -> retry a stale claim (its search died) or ask the strategy -> claim the trial in the study
    (nas/store/shared.py; a claim that loses to another search's is withdrawn and we ask again)
    -> evaluate -> record -> tell

and stops when the study holds `trials` finished trials; a search with nothing left to ask waits for
the others' claims to finish (or go stale and be retried). Searches on one study are not
reproducible run to run (who asks what depends on timing), so each search's strategy draws from
its own stream: the seed, the number of trials seen and the process id.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import numpy as np

from nas.evaluators.base import Evaluator
from nas.pipeline.runner import Executor, LocalExecutor, trial_seed
from nas.store.shared import Heartbeat, SharedStudyStore, is_shared_spec
from nas.store.study import open_store
from nas.store.storage import make_storage
from nas.strategies.base import Strategy
from nas.store.trial import Trial, TrialStore

log = logging.getLogger(__name__)
MAX_LOST_CLAIMS = 50   # then evaluate a duplicate rather than spin (a strategy that only proposes seen archs)


def open_any_store(spec: str, study: str, *, heartbeat_s: float = 10.0, **kwargs: Any) -> TrialStore:
    """`nas.store.study.open_store`, but a shared store (journal, RDB server) for specs several searches can share."""
    if not is_shared_spec(spec):
        return open_store(spec, study, **kwargs)
    if kwargs.pop("fresh", False):
        from nas.store.storage import _delete_study
        _delete_study(make_storage(spec), study)
    return SharedStudyStore(spec, study, grace_s=grace_seconds(heartbeat_s), **kwargs)


def grace_seconds(heartbeat_s: float) -> float:
    """How old a heartbeat may get before its claim counts as dead: three missed beats plus slack."""
    return 3 * heartbeat_s + 5.0


def run_cooperative(strategy: Strategy, evaluator: Evaluator, trials: int, store: SharedStudyStore,
                    progress: bool = True, on_trial: Callable[[Trial], None] | None = None,
                    executor: Executor | None = None, max_retries: int = 2, heartbeat_s: float = 10.0,
                    poll_s: float | None = None) -> list[Trial]:
    """Work on the shared study until it holds `trials` finished trials; return them all (by number)."""
    from tqdm import tqdm

    executor = executor or LocalExecutor(evaluator)
    poll_s = poll_s if poll_s is not None else min(2.0, heartbeat_s / 2)
    state = store.state()
    told: set[int] = set()
    history = [t for t in (store.to_trial(ft) for ft in state.finished) if t is not None]
    foreign = {t.arch.space for t in history} - {strategy.space.name}
    if foreign:
        from nas.core.errors import UsageError
        from nas.store.errors import mask
        raise UsageError(f"study {store.name!r} in {mask(store.spec)} holds archs of space "
                         f"{', '.join(sorted(foreign))}, not {strategy.space.name!r}; use another --study")
    strategy.rebuild(history)
    told.update(ft._trial_id for ft in state.finished)
    strategy.rng = np.random.default_rng([strategy.seed, len(told), os.getpid()])
    mine: dict[int, Any] = {}
    lost = 0
    bar = tqdm(total=trials, initial=min(len(state.finished), trials), desc=f"{strategy.name} search (shared)",
               unit="trial", disable=not progress)
    try:
        with Heartbeat(store, heartbeat_s):
            while True:
                state = store.state()
                _catch_up(strategy, store, state, told, mine, bar)
                if len(state.finished) >= trials and not mine:
                    break
                started = _fill(strategy, executor, store, state, trials, mine, max_retries, lost)
                lost = 0 if started > 0 else lost + (started < 0)
                if not mine:
                    time.sleep(poll_s)   # the others' claims finish, or go stale and we retry them
                    continue
                trial = executor.wait()
                mine.pop(trial.number, None)
                store.append(trial)
                strategy.tell(trial)
                if on_trial:
                    on_trial(trial)
    finally:
        bar.close()
    return sorted((t for t in (store.to_trial(ft) for ft in store.state().finished) if t is not None),
                  key=lambda t: t.number)


def _catch_up(strategy: Strategy, store: SharedStudyStore, state: Any, told: set[int], mine: dict[int, Any],
              bar: Any) -> None:
    """Tell the strategy the trials other searches finished; mark the archs they evaluate as asked."""
    for ft in state.finished:
        if ft._trial_id in told:
            continue
        told.add(ft._trial_id)
        if ft.number in mine:
            continue
        trial = store.to_trial(ft)
        if trial is not None and trial.arch not in strategy.seen:
            strategy.tell(trial)
    for ft in state.running:
        if ft.number not in mine:
            trial = store.to_trial(ft)
            if trial is not None:
                strategy.mark_asked(trial.arch)
    bar.n = min(len(state.finished), bar.total)
    bar.refresh()


def _fill(strategy: Strategy, executor: Executor, store: SharedStudyStore, state: Any, trials: int,
          mine: dict[int, Any], max_retries: int, lost: int) -> int:
    """Claim and submit trials up to the executor's capacity: the number started, or -1 if a claim was lost."""
    started = 0
    stale = list(state.stale)
    free = trials - state.visible
    while len(mine) < max(1, executor.capacity):
        if stale:
            work = store.take_over(stale.pop(0), max_retries)
            if work is None:
                continue
            arch, attempt = work
            free += 1   # the stale claim no longer counts
        elif free > 0:
            arch, attempt = strategy.ask(), 0
        else:
            break
        strategy.mark_asked(arch)
        number = store.claim(arch, trials, attempt, allow_duplicate=lost >= MAX_LOST_CLAIMS)
        if number is None:
            return -1 if started == 0 else started   # re-read the study before asking again
        executor.submit(number, arch, trial_seed(strategy.seed, number))
        mine[number] = arch
        free -= 1
        started += 1
    return started

