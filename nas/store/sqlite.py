"""The SQLite file behind a local search's store: WAL mode, a long busy timeout, and a check that an
existing file is an Optuna trial store (never silently replaced)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from nas.core.errors import NasError

if TYPE_CHECKING:
    import optuna


class StoreError(NasError):
    """A trial store that cannot be opened or used (exit code 1)."""


#: per Optuna version, the alembic_version table (DDL, head revision) of the first store this process made:
#: a later new file gets it written before Optuna opens it, so Optuna finds the schema stamped and does not
#: load its 20 alembic revision scripts again to find the same head (70-100 ms of CPU per new store)
_STAMPS: dict[str, tuple[str, str]] = {}


def sqlite_storage(url: str) -> "optuna.storages.RDBStorage":
    import sqlite3

    import optuna
    import sqlalchemy
    path = Path(url[len("sqlite:///"):])
    # a file this call creates gets this Optuna's schema, stamped with its head revision: checking that
    # schema against the same Optuna (it loads every alembic revision script) cannot fail, so it is skipped
    new = str(path) in ("", ":memory:") or not path.exists()
    if str(path) not in ("", ":memory:"):
        check_sqlite_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=60)
        try:  # WAL: readers (the dashboard) never block the writer; persistent in the file
            con.execute("PRAGMA journal_mode=WAL")
            stamp = _STAMPS.get(optuna.__version__) if new else None
            if stamp is not None:
                with con:
                    con.execute(stamp[0])
                    con.execute("INSERT INTO alembic_version (version_num) VALUES (?)", (stamp[1],))
        finally:
            con.close()
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}},
                                         skip_compatibility_check=new)
    if new and str(path) not in ("", ":memory:") and optuna.__version__ not in _STAMPS:
        _STAMPS[optuna.__version__] = _read_stamp(path)

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _pragmas(dbapi_con: Any, _record: Any) -> None:
        # NORMAL in WAL mode: a commit survives a killed process (not a power cut) without an fsync
        dbapi_con.execute("PRAGMA synchronous=NORMAL")

    storage.engine.dispose()  # reconnect so pooled connections get the pragma
    return storage


def _read_stamp(path: Path) -> tuple[str, str]:
    """(CREATE TABLE statement, revision) of the alembic_version table Optuna stamped in `path`."""
    import sqlite3
    con = sqlite3.connect(path, timeout=60)
    try:
        ddl = con.execute("SELECT sql FROM sqlite_master WHERE type='table' AND name='alembic_version'").fetchone()
        rev = con.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        con.close()
    if ddl is None or len(rev) != 1:
        raise StoreError(f"storage file {path}: Optuna left no single alembic revision in it")
    return str(ddl[0]), str(rev[0][0])


def check_sqlite_file(path: Path) -> None:
    """An existing file must be a SQLite database with an Optuna schema (or none yet): a zero-byte
    or foreign file is an error, never silently made into a fresh store. The file is read through
    SQLite only: a plain open() + close() here would drop this process's SQLite locks on it."""
    import sqlite3
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"storage file {path} is a folder")
    if path.stat().st_size == 0:
        raise StoreError(f"storage file {path} is empty (zero bytes), not a trial store; move it away or "
                         f"give another --out")
    con = sqlite3.connect(path, timeout=60)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CORRUPT:   # SQLite's, but damaged
            from nas.store.errors import CORRUPT, fatal_message
            raise StoreError(fatal_message(str(path), str(path), CORRUPT, str(exc), "opening it")) from None
        raise StoreError(f"storage file {path} is not a SQLite database ({exc}), not a trial store; move it "
                         f"away or give another --out") from None
    finally:
        con.close()
    if tables - {"alembic_version"} and "studies" not in tables:   # alone: stamped, Optuna not yet in
        raise StoreError(f"storage file {path} is a SQLite database of something else (tables: "
                         f"{', '.join(sorted(tables)[:5])}), not an Optuna trial store; give another --out")
