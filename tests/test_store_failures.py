"""Failures no retry can cure - a corrupt trials.db, a full disk - stop the search at once with one
line naming the file, the cause and the fix. Before: 8 retries with back-off (about 5 s), then
"An exception is raised during the commit. This typically happens due to invalid data in the commit"."""
from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy

from nas.cli.main import main
from nas.pipeline.runner import run_search
from nas.store.study import StoreError, open_store
from nas.store.errors import CORRUPT, FULL, fatal_cause
from nas.strategies.catalog import STRATEGIES
from search_spaces.catalog import get_space

SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)


def score(arch) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {"score": float(sum(g == "skip" for g in arch.genes))}


def corrupt(db: Path) -> None:
    """Move the WAL into the file, then overwrite every page after the first with junk (the header
    stays valid: SQLite opens the file and meets the damage when it reads a table)."""
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(bytes((i * 151 + 7) % 256 for i in range(size - 4096)))


def test_corrupt_store_mid_run_stops_at_once(tmp_path: Path) -> None:
    db = tmp_path / "trials.db"
    store = open_store(f"sqlite:///{db}", "s", space=SPACE)
    seen: list[int] = []

    def corrupt_after_3(trial) -> None:  # type: ignore[no-untyped-def]
        seen.append(trial.number)
        if len(seen) == 3:
            corrupt(db)

    t0 = time.perf_counter()
    with pytest.raises(StoreError) as info:
        run_search(STRATEGIES.get("random")(SPACE, seed=0), score, 10, store, progress=False, on_trial=corrupt_after_3)
    seconds = time.perf_counter() - t0
    msg = str(info.value)
    assert msg.startswith(f"trial store {db} is corrupt (database disk image is malformed) while creating a trial")
    assert f"mv {db} {db}.corrupt" in msg and "--resume cannot continue" in msg
    assert "\n" not in msg and "invalid data" not in msg and "8 times" not in msg
    assert seen == [0, 1, 2] and seconds < 2.5   # no retries: the 8 tries slept 5.2 s


def test_corrupt_store_on_resume_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["search", "--space", "mbconv", "--target", "pixel1", "--evaluator-option", "proxy=params",
            "--trials", "3", "--out", str(out), "--quiet"]
    assert main(args) == 0
    corrupt(out / "trials.db")
    capsys.readouterr()
    assert main([*args[:-3], "--trials", "5", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    db = (out / "trials.db").resolve()
    assert err == (f"nas: error: trial store {db} is corrupt (database disk image is malformed) while opening it; "
                   f"move it aside (mv {db} {db}.corrupt) and start a new search there: --resume cannot continue "
                   f"from a corrupt store\n")


def test_full_disk_stops_at_once(tmp_path: Path) -> None:
    """SQLite's own SQLITE_FULL: the file may not grow past its current size (PRAGMA max_page_count on
    every connection), as on a full disk."""
    db = tmp_path / "trials.db"
    store = open_store(f"sqlite:///{db}", "s", space=SPACE)
    run_search(STRATEGIES.get("random")(SPACE, seed=0), score, 2, store, progress=False)
    engine = store.storage.engine   # type: ignore[attr-defined]

    @sqlalchemy.event.listens_for(engine, "connect")
    def _cap(dbapi_con, _record) -> None:  # type: ignore[no-untyped-def]
        pages = dbapi_con.execute("PRAGMA page_count").fetchone()[0]
        dbapi_con.execute(f"PRAGMA max_page_count = {pages}")

    engine.dispose()

    def big(arch) -> dict[str, float]:  # type: ignore[no-untyped-def]
        return {"score": 1.0, **{f"m{i}": float(i) for i in range(3000)}}   # more than the pages left

    t0 = time.perf_counter()
    with pytest.raises(StoreError) as info:
        run_search(STRATEGIES.get("random")(SPACE, seed=1), big, 10, store, progress=False)
    msg = str(info.value)
    assert msg.startswith(f"trial store {db}: the disk is full (database or disk is full) while ")
    assert "free space on the disk that holds it, then run the same command again" in msg
    assert "invalid data" not in msg and time.perf_counter() - t0 < 2.5


def test_fatal_cause_sees_through_wrappers() -> None:
    def wrapped(inner: BaseException) -> BaseException:
        try:
            try:
                raise inner
            except BaseException as exc:
                raise RuntimeError("An exception is raised during the commit ... invalid data") from exc
        except RuntimeError as outer:
            return outer

    assert fatal_cause(wrapped(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))))[0] == FULL   # type: ignore[index]
    assert fatal_cause(wrapped(sqlite3.DatabaseError("file is not a database")))[0] == CORRUPT   # type: ignore[index]
    assert fatal_cause(sqlite3.OperationalError("database or disk is full"))[0] == FULL   # type: ignore[index]
    assert fatal_cause(wrapped(sqlite3.OperationalError("database is locked"))) is None   # transient: retried
    assert fatal_cause(OSError(errno.EACCES, "Permission denied")) is None
    assert fatal_cause(ValueError("database disk image is malformed")) is None   # not a driver's own error


def test_concurrent_schema_creation_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two searches started together on a fresh RDB both create Optuna's schema; the slower one got
    "... already exists" (PostgreSQL, alembic_version) and crashed. It is retried; other errors are not."""
    import optuna

    from nas.store import storage as store
    calls: list[int] = []

    def flaky(url: str, **kwargs: object) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError('duplicate key value violates unique constraint "pg_type_typname_nsp_index": '
                               'Key (typname)=(alembic_version) already exists.')
        return "storage"
    monkeypatch.setattr(optuna.storages, "RDBStorage", flaky)
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    assert store._rdb_storage("postgresql://x/y", {}) == "storage" and len(calls) == 2

    def broken(url: str, **kwargs: object) -> str:
        calls.append(1)
        raise RuntimeError("password authentication failed")
    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    calls.clear()
    with pytest.raises(RuntimeError, match="password"):
        store._rdb_storage("postgresql://x/y", {})
    assert len(calls) == 1
