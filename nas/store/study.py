"""`OptunaStore`: trials kept in an Optuna storage (SQLite file, any RDB URL, or a journal file).

Every trial is one Optuna trial of one study, so `optuna-dashboard sqlite:///DIR/trials.db` shows a
search while it runs. A trial is created RUNNING when its evaluation starts (`start`) and finished
COMPLETE or FAIL when it ends (`append`); the objective values are the strategy's objectives (the
`score` by default), the decisions of the space are categorical params (for the dashboard's
importance and slice plots), and the rest lives in user attributes:

    arch (arch JSON), arch_str (block string), attempt (retries of an interrupted trial),
    metrics (all metrics), seed, seconds, error (failed trials), interrupted (see `recover`)

A search killed mid-evaluation leaves RUNNING trials; `recover()` marks them failed+interrupted and
returns their archs so the runner evaluates them again under new trial numbers. Interrupted trials
are not counted (`trials()` skips them); an arch interrupted `max_retries` times is kept as an
ordinary failed trial instead, so an arch that kills its process cannot stall a search forever.

Storage specs (`--storage`): ``sqlite:///PATH`` or any SQLAlchemy URL (postgresql://, mysql://),
``journal:PATH`` (Optuna's append-only journal file), ``jsonl:PATH`` (the plain `JsonlStore`).
"""
from __future__ import annotations

import datetime as _dt
import functools
import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.store.sqlite import StoreError
from nas.store.storage import _delete_study, make_storage
from nas.store.trial import COMPLETE, FAILED, JsonlStore, Trial, TrialStore

if TYPE_CHECKING:
    import optuna

    from nas.core.space import SearchSpace

log = logging.getLogger(__name__)
T = TypeVar("T")


# ---- opening ----------------------------------------------------------------------------------
def open_store(spec: str, study: str, *, space: "SearchSpace | None" = None,
               objectives: Sequence[tuple[str, bool]] = (("score", True),), fresh: bool = False,
               create: bool = True, params: bool = True, batch: bool = False) -> TrialStore:
    """Open (or create) the store a spec names; `fresh` discards the study's trials first. `batch`:
    this process is the study's only writer (a local SQLite file under the run lock), so quick
    trials are written in batches (`nas.store.fastpath.WriteBatch`); call `flush()` at the end."""
    if spec.startswith("jsonl:"):
        path = Path(spec[len("jsonl:"):])
        if fresh and path.exists():
            path.unlink()
        return JsonlStore(path)
    storage = make_storage(spec)
    if fresh:
        _delete_study(storage, study)
    return OptunaStore(storage, study, space=space, objectives=objectives, create=create, params=params,
                       batch=batch)


# ---- the store ------------------------------------------------------------------------------------
class OptunaStore:
    """A `TrialStore` on one study of an Optuna storage; trial numbers are the study's.

    `params=False` leaves out the decisions as Optuna params: no importance/slice plots in the
    dashboard, but trial creation is several times cheaper on RDB storages (Optuna writes each
    param with its own queries; see benchmarks/runner_throughput.py)."""

    def __init__(self, storage: "optuna.storages.BaseStorage", study: str, *, space: "SearchSpace | None" = None,
                 objectives: Sequence[tuple[str, bool]] = (("score", True),), create: bool = True,
                 params: bool = True, batch: bool = False) -> None:
        import optuna
        self.storage, self.space, self.params = storage, space, params
        self.objectives = tuple((str(m), bool(mx)) for m, mx in objectives)
        directions: list[Any] = ["maximize" if mx else "minimize" for _, mx in self.objectives]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                if create:
                    self.study = optuna.create_study(storage=storage, study_name=study, directions=directions,
                                                     load_if_exists=True)
                else:
                    self.study = optuna.load_study(study_name=study, storage=storage)
            except KeyError:
                names = sorted(optuna.get_all_study_names(storage))
                raise UsageError(f"no study {study!r} in the storage; studies there: "
                                 f"{', '.join(names) or '(none)'}") from None
            if create:
                got = [d.name.lower() for d in self.study.directions]
                if got != directions:
                    raise UsageError(f"study {study!r} optimises {got}, not {directions} "
                                     f"({', '.join(m for m, _ in self.objectives)}); use another --study")
                if self.study.metric_names is None:
                    self.study.set_metric_names([m for m, _ in self.objectives])
        self.name = study
        from nas.store.errors import storage_location
        self.where = storage_location(storage)   # the file or URL, in error messages
        self.constraints: tuple[tuple[str, float, bool], ...] = ()   # (metric, bound, upper), see set_constraints
        self._study_id = storage.get_study_id_from_name(study)
        self._ids: dict[int, int] = {}   # trial number -> storage trial id, for trials we started
        from nas.store.fastpath import supported
        #: finish trials in one transaction (nas/store/fastpath.py); their params are then written at
        #: the end, with the rest, instead of with 6 queries each when the trial starts
        self._fast = supported(storage)
        self._deferred: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}   # trial id -> params, dists
        self._batch = None
        self._dists: list[Any] | None = None   # the space's param distributions, made once (`_params`)
        if batch and self._fast:
            from nas.store.fastpath import WriteBatch
            self._batch = WriteBatch(storage, self._study_id, storage.get_n_trials(self._study_id))

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        from nas.store.errors import retry
        return retry(fn, what, self.where, StoreError)

    # -- study attributes -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any] | None:
        return self.study.user_attrs.get("nas_config")

    def set_config(self, config: dict[str, Any]) -> None:
        self._retry(lambda: self.study.set_user_attr("nas_config", config), "saving the config")

    # -- writing ----------------------------------------------------------------------------------
    def _start_attrs(self, arch: Arch, attempt: int) -> dict[str, Any]:
        """User attributes of a new trial: the arch (JSON and block string) and its attempt number."""
        attrs: dict[str, Any] = {"arch": arch.to_dict()}
        if self.space is not None:
            try:
                attrs["arch_str"] = self.space.format(arch)
            except ArchError:
                pass
        if attempt:
            attrs["attempt"] = attempt
        return attrs

    def start(self, arch: Arch, attempt: int = 0) -> int:
        """Record a RUNNING trial for `arch`; return its number."""
        from optuna.trial import FrozenTrial, TrialState
        attrs = self._start_attrs(arch, attempt)
        params, dists = self._params(arch)
        if self._batch is not None and self._batch.can_defer():   # no row until its batch is written
            number = self._batch.next_number
            self._batch.next_number += 1
            self._batch.add(number, attrs, params, dists)
            return number
        self.flush()   # rows go in number order
        if self._fast:   # one transaction; params are written when the trial finishes
            from nas.store.fastpath import start_trial
            tid, number = self._retry(lambda: start_trial(self.storage, self._study_id, attrs), "creating a trial")
            if self._batch is not None:
                self._batch.next_number = number + 1
            if params:
                self._deferred[tid] = (params, dists)
            self._ids[number] = tid
            return number
        template = FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, values=None,
                               datetime_start=_dt.datetime.now(), datetime_complete=None, params=params,
                               distributions=dists, user_attrs=attrs, system_attrs={}, intermediate_values={},
                               trial_id=-1)
        tid = self._retry(lambda: self.storage.create_new_trial(self._study_id, template), "creating a trial")
        number = self.storage.get_trial_number_from_id(tid)
        self._ids[number] = tid
        return number

    def append(self, trial: Trial) -> None:
        """Finish a trial begun with `start` (or add a finished one; it then gets the next number)."""
        batched = self._batch is not None and trial.number in self._batch.pending
        tid = None if batched else self._ids.pop(trial.number, None)
        if tid is None and not batched:
            number = self.start(trial.arch)
            batched = self._batch is not None and number in self._batch.pending
            tid = None if batched else self._ids.pop(number)
        attrs: dict[str, Any] = {"metrics": trial.metrics, "seed": trial.seed, "seconds": trial.seconds}
        if trial.error is not None:
            attrs["error"] = trial.error
        attrs.update(self._numeric_attrs(trial))
        values = self._values(trial)
        if trial.ok and values is None:
            attrs["status"] = COMPLETE   # complete for us, but Optuna needs the objective values
        violations = self._violations(trial)
        system = {} if violations is None else {"constraints": violations}
        if self._batch is not None:
            self._batch.last_eval_s = trial.seconds
        if batched:
            from optuna.trial import TrialState
            state = TrialState.COMPLETE if values is not None else TrialState.FAIL
            self._batch.finish(trial.number, attrs, state, values, system)   # type: ignore[union-attr]
            if self._batch.due():   # type: ignore[union-attr]
                self.flush()
            return
        if violations is not None and not self._fast:
            self._retry(functools.partial(self.storage.set_trial_system_attr, tid, "constraints", violations),
                   "saving constraints")
        self._finish(tid, attrs, values, system)   # type: ignore[arg-type]

    def flush(self) -> None:
        """Write the batched trials (no-op without batching); trials still running become RUNNING rows."""
        if self._batch is None or not self._batch.pending:
            return
        for number, (tid, p) in self._retry(self._batch.write, "writing trials").items():
            self._ids[number] = tid
            if p.params:
                self._deferred[tid] = (p.params, p.distributions)

    def set_constraints(self, constraints: Sequence[tuple[str, float, bool]]) -> None:
        """Bounds (metric, bound, upper) recorded on each finished trial the way Optuna's samplers and
        optuna-dashboard read them: system attr `constraints`, values <= 0 feasible."""
        self.constraints = tuple((str(m), float(b), bool(up)) for m, b, up in constraints)

    def _numeric_attrs(self, trial: Trial) -> dict[str, float]:
        """Latency metrics as plain numeric user attributes (sortable and filterable in the dashboard;
        `metrics` alone is one JSON value)."""
        return {k: float(v) for k, v in trial.metrics.items() if k.startswith("latency_ms")
                and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}

    def _violations(self, trial: Trial) -> list[float] | None:
        values = [trial.metrics.get(m) for m, _, _ in self.constraints]
        if not self.constraints or not trial.ok or any(not isinstance(v, (int, float)) for v in values):
            return None
        return [float(v) - b if up else b - float(v) for v, (_, b, up) in zip(values, self.constraints)]

    def _finish(self, tid: int, attrs: dict[str, Any], values: list[float] | None,
                system: dict[str, Any] | None = None) -> None:
        from optuna.trial import TrialState

        from nas.store.fastpath import finish_trial
        state = TrialState.COMPLETE if values is not None else TrialState.FAIL
        if self._fast:   # RDB storages: params, attributes and state in one transaction
            params, dists = self._deferred.pop(tid, ({}, {}))
            self._retry(lambda: finish_trial(self.storage, tid, attrs, state, values, params, dists, system),
                   "finishing a trial")
            return
        for key, value in attrs.items():
            self._retry(functools.partial(self.storage.set_trial_user_attr, tid, key, value), f"saving {key}")
        self._retry(lambda: self.storage.set_trial_state_values(tid, state, values), "finishing a trial")

    def _values(self, trial: Trial) -> list[float] | None:
        if not trial.ok:
            return None
        vals = [trial.value(m) for m, _ in self.objectives]
        return None if any(math.isnan(v) for v in vals) else vals

    def _params(self, arch: Arch) -> tuple[dict[str, Any], dict[str, Any]]:
        """The space's decisions as categorical params (scalar choices only)."""
        from optuna.distributions import CategoricalDistribution
        if not self.params or self.space is None or arch.space != self.space.name:
            return {}, {}
        if self._dists is None:   # per decision: its distribution, None when a choice is no scalar
            self._dists = [CategoricalDistribution(list(d.choices))
                           if all(c is None or isinstance(c, (str, int, float, bool)) for c in d.choices) else None
                           for d in self.space.decisions]
        params, dists = {}, {}
        for d, dist, gene in zip(self.space.decisions, self._dists, arch.genes):
            if dist is not None and gene in d.choices:
                params[d.name], dists[d.name] = gene, dist
        return params, dists

    # -- reading ----------------------------------------------------------------------------------
    def trials(self) -> list[Trial]:
        """Finished trials by number (interrupted ones, which were retried, left out)."""
        from optuna.trial import TrialState
        self.flush()
        frozen = self._retry(lambda: self.study.get_trials(deepcopy=False,
                                                      states=(TrialState.COMPLETE, TrialState.FAIL)),
                        "reading trials")
        out = []
        for ft in frozen:
            if ft.user_attrs.get("interrupted"):
                continue
            trial = self._to_trial(ft)
            if trial is not None:
                out.append(trial)
        return out

    def _to_trial(self, ft: Any) -> Trial | None:
        from optuna.trial import TrialState
        ua = ft.user_attrs
        try:
            arch = Arch.from_dict(ua["arch"])
        except (KeyError, ArchError):
            log.warning("study %r trial %d has no nas arch; skipped", self.name, ft.number)
            return None
        status = ua.get("status") or (COMPLETE if ft.state == TrialState.COMPLETE else FAILED)
        return Trial(ft.number, arch, dict(ua.get("metrics") or {}), status, ua.get("error"),
                     float(ua.get("seconds", 0.0)), int(ua.get("seed", 0)))

    def recover(self, max_retries: int = 2) -> list[tuple[Arch, int]]:
        """Mark trials left RUNNING by a stopped search as failed; return (arch, attempt) to retry.

        Call it only when no other live search writes to this study (their running trials would be
        taken for stopped ones)."""
        from optuna.trial import TrialState
        running = self._retry(lambda: self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)),
                         "reading trials")
        retry = []
        for ft in running:
            if ft.number in self._ids:
                continue
            tid = self.storage.get_trial_id_from_study_id_trial_number(self._study_id, ft.number)
            attempt = int(ft.user_attrs.get("attempt", 0))
            arch = None
            try:
                arch = Arch.from_dict(ft.user_attrs["arch"])
            except (KeyError, ArchError):
                pass
            if arch is not None and attempt < max_retries:
                self._finish(tid, {"interrupted": True, "error": "interrupted: the search stopped "
                             "during this evaluation; it was evaluated again as a new trial"}, None)
                retry.append((arch, attempt + 1))
            else:
                self._finish(tid, {"error": f"interrupted {attempt + 1} times: the search stopped "
                             "during this evaluation each time (does it crash the process?)"}, None)
        if running:
            log.warning("study %r: %d trial(s) left running by a stopped search marked failed; %d will be "
                        "evaluated again", self.name, len(running), len(retry))
        return retry
