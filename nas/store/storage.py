"""Storage specs: which Optuna storage a `--storage` spec or an `--out` folder names, and opening it.

Specs: ``sqlite:///PATH`` or any SQLAlchemy URL (postgresql://, mysql://), ``journal:PATH`` (Optuna's
append-only journal file), ``jsonl:PATH`` (the plain `JsonlStore`, opened by `nas.store.study.open_store`).
A bad spec or an unreachable server is one line (`nas.store.errors.describe`), never a driver traceback
(split from `nas.store.study`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.core.errors import NasError, UsageError
from nas.store.sqlite import StoreError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
STORE_FILE = "trials.db"
SPEC_FORMS = "sqlite:///PATH, postgresql://..., mysql://..., journal:PATH, jsonl:PATH"


def default_spec(out: str | Path | None) -> str | None:
    """The store of an --out folder: DIR/trials.db (or a legacy DIR/trials.jsonl if that is all it holds)."""
    if out is None:
        return None
    out = Path(out)
    if (out / "trials.jsonl").exists() and not (out / STORE_FILE).exists():
        return f"jsonl:{out / 'trials.jsonl'}"
    return f"sqlite:///{(out / STORE_FILE).resolve()}"


def sqlite_study_names(path: str | Path) -> list[str] | None:
    """The study names in the Optuna SQLite file `path`, read directly (no Optuna); None when `path`
    is missing or not such a file (the store's own checks then say what is wrong)."""
    import sqlite3
    if not Path(path).is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=10)
        try:
            return [str(r[0]) for r in con.execute("SELECT study_name FROM studies ORDER BY study_id")]
        finally:
            con.close()
    except sqlite3.Error:
        return None


def default_study(out: str | Path | None) -> str:
    """Study name derived from the --out folder's name ("nas-search" without one)."""
    return Path(out).resolve().name if out is not None and Path(out).resolve().name else "nas-search"


def make_storage(spec: str) -> "optuna.storages.BaseStorage":
    """An Optuna storage for `journal:PATH` or an RDB URL; SQLite files get WAL mode and a long busy
    timeout so that several processes can write one file."""
    import optuna
    _quiet_optuna()
    try:
        if spec.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend
            path = Path(spec[len("journal:"):])
            if not path.name:
                raise UsageError(f"storage {spec!r} names no file; valid forms: {SPEC_FORMS}")
            path.parent.mkdir(parents=True, exist_ok=True)
            from nas.store.journal import set_aside_torn_records
            set_aside_torn_records(path)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if "://" not in spec:
            raise UsageError(f"storage {spec!r} is not a storage URL; valid forms: {SPEC_FORMS}")
        if spec.startswith("sqlite:///"):
            from nas.store.sqlite import sqlite_storage
            return sqlite_storage(spec)
        kwargs = {"connect_args": {"connect_timeout": 10}} if spec.startswith("postgresql") else {}
        return _rdb_storage(spec, kwargs)
    except NasError:
        raise
    except Exception as exc:  # ImportError (driver), sqlalchemy ArgumentError/OperationalError, OSError ...
        from nas.store.errors import describe   # one line, password masked, with the fix
        message, usage = describe(spec, exc)
        raise (UsageError if usage else StoreError)(message) from None


def _rdb_storage(spec: str, engine_kwargs: dict[str, Any], tries: int = 5) -> "optuna.storages.RDBStorage":
    """Optuna's RDB storage; two searches started together on a fresh database both create its schema,
    and the slower one fails with "... already exists" (seen on PostgreSQL: the alembic_version type).
    The schema is there a moment later, so that error is retried."""
    import optuna
    for attempt in range(tries):
        try:
            return optuna.storages.RDBStorage(spec, heartbeat_interval=None, engine_kwargs=engine_kwargs)
        except Exception as exc:  # sqlalchemy IntegrityError / ProgrammingError from the concurrent CREATE
            if attempt == tries - 1 or "already exists" not in str(exc):
                raise
            log.info("storage schema being created by another process (%s); retrying", type(exc).__name__)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _quiet_optuna() -> None:
    """Optuna logs every study creation and trial at INFO; keep that for `nas -v` only."""
    import optuna
    if not logging.getLogger("nas").isEnabledFor(logging.INFO):
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def _delete_study(storage: Any, study: str) -> None:
    import optuna
    try:
        optuna.delete_study(study_name=study, storage=storage)
        log.warning("discarded the stored trials of study %r (--no-resume)", study)
    except KeyError:
        pass
