"""Finish an Optuna trial in one database transaction (SQLite and other RDB storages).

Optuna's public storage API commits each user attribute and the final state separately, and
writes each param with a trial lookup, a study-wide query for an earlier distribution and a flush,
so one trial of ours (21 categorical params for mbconv; metrics, seed, seconds, maybe error and
status; then state + values) cost about 30 queries in 6 transactions - most of the store's
per-trial time for cheap evaluators. `finish_trial` does the same writes through the RDB storage's
own row helpers inside a single session: the params as one batch of rows (their distributions
are the space's, fixed for a study by the config check, so the per-param compatibility query is
skipped), then attributes, values and state. They commit together: a trial is either fully
finished or still RUNNING (which `OptunaStore.recover` retries), never half-written. Storages
without those helpers (journal files, a future Optuna) are not `supported` and the caller uses the
public API.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

log = logging.getLogger(__name__)


_HELPERS = ("_set_trial_attr_without_commit", "_set_trial_value_without_commit", "check_trial_is_updatable",
            "scoped_session")


def supported(storage: Any) -> bool:
    """Whether `finish_trial` can write to `storage` (an Optuna RDB storage with the row helpers)."""
    try:
        import optuna
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session  # noqa: F401
    except ImportError:
        return False
    return (isinstance(storage, optuna.storages.RDBStorage) and all(hasattr(storage, m) for m in _HELPERS)
            and hasattr(models, "TrialParamModel"))


def start_trial(storage: Any, study_id: int, attrs: dict[str, Any]) -> tuple[int, int]:
    """Create a RUNNING trial with user attributes `attrs` in one transaction; (trial id, number).
    Numbering as Optuna does it: the count of the study's earlier trials, inside the transaction."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState
    with _create_scoped_session(storage.scoped_session) as session:
        trial = models.TrialModel(study_id=study_id, number=None, state=TrialState.RUNNING,
                                  datetime_start=_dt.datetime.now())
        session.add(trial)
        session.flush()
        _set_attrs(session, models, trial.trial_id, attrs)
        trial.number = trial.count_past_trials(session)
        trial_id, number = int(trial.trial_id), int(trial.number)
    return trial_id, number


def _set_attrs(session: Any, models: Any, trial_id: int, attrs: dict[str, Any], system: bool = False) -> None:
    """Insert or update user (or system) attributes of one trial with one query for the keys it has."""
    model = models.TrialSystemAttributeModel if system else models.TrialUserAttributeModel
    import sqlalchemy
    existing = {a.key: a for a in session.query(model).filter(model.trial_id == trial_id)} if attrs else {}
    new = []
    for key, value in attrs.items():
        if key in existing:
            existing[key].value_json = json.dumps(value)
        else:
            new.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
    if new:
        session.execute(sqlalchemy.insert(model), new)


def finish_trial(storage: Any, trial_id: int, attrs: dict[str, Any], state: Any, values: Sequence[float] | None,
                 params: dict[str, Any] | None = None, distributions: dict[str, Any] | None = None,
                 system_attrs: dict[str, Any] | None = None) -> None:
    """Set the `params` (with their `distributions`), `attrs` as user attributes, `system_attrs`
    (the constraints), the objective `values` and the finished `state` of trial `trial_id`, in one
    transaction (`supported` storages)."""
    import sqlalchemy
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    with _create_scoped_session(storage.scoped_session) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session, for_update=True)
        storage.check_trial_is_updatable(trial_id, trial.state)
        dists = distributions or {}
        rows = [{"trial_id": trial_id, "param_name": name, "param_value": dists[name].to_internal_repr(value),
                 "distribution_json": distribution_to_json(dists[name])} for name, value in (params or {}).items()]
        if rows:   # one executemany, not one ORM insert per param
            session.execute(sqlalchemy.insert(models.TrialParamModel), rows)
        _set_attrs(session, models, trial_id, attrs)
        if system_attrs:
            _set_attrs(session, models, trial_id, system_attrs, system=True)
        for objective, value in enumerate(values or ()):
            storage._set_trial_value_without_commit(session, trial, objective, value)
        trial.state = state
        trial.datetime_complete = _dt.datetime.now()


# ---- batched writes (one exclusive writer) --------------------------------------------------------
@dataclass
class Pending:
    """A trial of ours with no row yet: started (`state` None) or finished and waiting for the batch."""

    number: int
    attrs: dict[str, Any]
    params: dict[str, Any]
    distributions: dict[str, Any]
    start: _dt.datetime
    state: Any = None
    values: Sequence[float] | None = None
    system_attrs: dict[str, Any] = field(default_factory=dict)
    complete: _dt.datetime | None = None


class WriteBatch:
    """Writes of a store that is the study's only writer (a local SQLite file under the run lock),
    grouped into one transaction per `max_trials` trials or `max_seconds`, whichever comes first.

    While evaluations are quick (the last one took under `defer_below_s`, 1 s: on a loaded machine a
    millisecond evaluation can take tens of ms of wall time, and a threshold near that made most
    trials RUNNING rows there, two transactions each), a new trial gets its
    number here and no row: it is written, finished, with the batch. A slow evaluation (and the
    first one) is started as before, as a RUNNING row, so the dashboard shows it and a search killed
    during it retries it (`OptunaStore.recover`, with its retry limit). Rows are always inserted in
    number order with the numbers Optuna itself would give (the count of the study's earlier
    trials), so the study stays an ordinary Optuna study. A killed search loses only the unwritten
    trials of the last batch; they were never stored, so a resumed search runs that many again and
    still ends with exactly --trials trials."""

    def __init__(self, storage: Any, study_id: int, next_number: int, *, max_trials: int = 256,
                 max_seconds: float = 5.0, defer_below_s: float = 1.0) -> None:
        self.storage, self.study_id, self.next_number = storage, study_id, int(next_number)
        self.max_trials, self.max_seconds, self.defer_below_s = int(max_trials), float(max_seconds), defer_below_s
        self.pending: dict[int, Pending] = {}   # by number, insertion (= number) order
        self.last_eval_s: float | None = None
        self._since: float | None = None
        self._dist_json: dict[str, tuple[Any, str]] = {}

    def _json(self, name: str, dist: Any, to_json: Any) -> str:
        """A param's distribution JSON, made once per param (the space's distributions are fixed)."""
        known = self._dist_json.get(name)
        if known is None or (known[0] is not dist and known[0] != dist):   # the store passes one object per param
            known = self._dist_json[name] = (dist, to_json(dist))
        return known[1]

    def can_defer(self) -> bool:
        return self.last_eval_s is not None and self.last_eval_s < self.defer_below_s

    def add(self, number: int, attrs: dict[str, Any], params: dict[str, Any], dists: dict[str, Any]) -> None:
        self.pending[number] = Pending(number, attrs, params, dists, _dt.datetime.now())
        self._since = self._since if self._since is not None else time.monotonic()

    def finish(self, number: int, attrs: dict[str, Any], state: Any, values: Sequence[float] | None,
               system_attrs: dict[str, Any]) -> None:
        p = self.pending[number]
        p.attrs.update(attrs)
        p.state, p.values, p.system_attrs, p.complete = state, values, system_attrs, _dt.datetime.now()

    def due(self) -> bool:
        finished = sum(p.state is not None for p in self.pending.values())
        return bool(self.pending) and (finished >= self.max_trials or self._since is None
                                       or time.monotonic() - self._since >= self.max_seconds)

    def write(self) -> dict[int, tuple[int, Pending]]:
        """Insert every pending trial in one transaction; returns number -> (trial id, record) of the
        ones still running (now RUNNING rows, to be finished the ordinary way)."""
        if not self.pending:
            return {}
        import sqlalchemy
        from optuna.distributions import distribution_to_json
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
        from optuna.trial import TrialState
        records = sorted(self.pending.values(), key=lambda p: p.number)
        table = models.TrialModel.__table__
        with _create_scoped_session(self.storage.scoped_session) as session:
            # one executemany with RETURNING (no ORM objects): the new ids, in the order of the rows
            got = session.connection().execute(
                sqlalchemy.insert(table).returning(table.c.trial_id, sort_by_parameter_order=True),
                [{"study_id": self.study_id, "number": p.number,
                  "state": TrialState.RUNNING if p.state is None else p.state,
                  "datetime_start": p.start, "datetime_complete": p.complete} for p in records])
            ids = [int(r[0]) for r in got]
            first = session.query(sqlalchemy.func.count(models.TrialModel.trial_id)).filter(
                models.TrialModel.study_id == self.study_id, models.TrialModel.trial_id < ids[0]).scalar()
            if first != records[0].number:   # someone else wrote to the study: never renumber silently
                raise RuntimeError(f"trial store: study has {first} earlier trials, expected {records[0].number}; "
                                   "another process writes to it (use a shared --storage for that)")
            params, users, systems, values = [], [], [], []
            for tid, p in zip(ids, records):
                users += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in p.attrs.items()]
                if p.state is None:
                    continue   # params with the finish, as for a trial started RUNNING
                params += [{"trial_id": tid, "param_name": k, "param_value": p.distributions[k].to_internal_repr(v),
                            "distribution_json": self._json(k, p.distributions[k], distribution_to_json)}
                           for k, v in p.params.items()]
                systems += [{"trial_id": tid, "key": k, "value_json": json.dumps(v)} for k, v in p.system_attrs.items()]
                for objective, value in enumerate(p.values or ()):
                    stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                    values.append({"trial_id": tid, "objective": objective, "value": stored, "value_type": kind})
            for model, batch in ((models.TrialParamModel, params), (models.TrialUserAttributeModel, users),
                                 (models.TrialSystemAttributeModel, systems), (models.TrialValueModel, values)):
                if batch:   # plain executemany on the transaction's connection (no ORM bookkeeping)
                    session.connection().execute(sqlalchemy.insert(model.__table__), batch)
            running = {p.number: (tid, p) for tid, p in zip(ids, records) if p.state is None}
        self.pending.clear()
        self._since = None
        return running
