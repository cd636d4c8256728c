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
import logging
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


def _set_attrs(session: Any, models: Any, trial_id: int, attrs: dict[str, Any]) -> None:
    """Insert or update user attributes of one trial with one query for the keys it already has."""
    import json
    model = models.TrialUserAttributeModel
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
                 params: dict[str, Any] | None = None, distributions: dict[str, Any] | None = None) -> None:
    """Set the `params` (with their `distributions`), `attrs` as user attributes, the objective
    `values` and the finished `state` of trial `trial_id`, in one transaction (`supported` storages)."""
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
        for objective, value in enumerate(values or ()):
            storage._set_trial_value_without_commit(session, trial, objective, value)
        trial.state = state
        trial.datetime_complete = _dt.datetime.now()
