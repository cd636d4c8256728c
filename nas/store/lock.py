"""`run_lock`: one search at a time on a local store (the SQLite file in --out, or a jsonl file).

A second `nas search` on the same folder would take over the first one's running trial (its
`recover` sees a RUNNING trial and retries it) and the first would then crash finishing it. So a
search on a local store holds an exclusive `fcntl.flock` on ``<store file>.lock`` (for the default
store that is ``--out/trials.db.lock``) for as long as it runs, and a second one is refused with a
line naming the holder. The kernel drops a flock when its holder dies, even by SIGKILL, so a killed
search never leaves a stuck lock. The lock file also records who holds it (pid, host, start time);
when the lock is busy but that pid is dead on this host (a child that inherited the descriptor
outlives the search), the lock file is replaced and taken over.

Shared stores (PostgreSQL/MySQL URLs, `journal:PATH`) are not locked: several searches may work on
one study there together (nas/pipeline/cooperative.py).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from nas.core.errors import NasError, UsageError

log = logging.getLogger(__name__)
SUFFIX = ".lock"


class RunLockedError(NasError):
    """Another live search holds the store (exit code 1)."""


def local_store_file(storage: str | None, out: str | Path | None) -> Path | None:
    """The local file a search writes its trials to (None for shared stores and in-memory searches)."""
    if storage is None:
        if out is None:
            return None
        from nas.store.storage import default_spec
        storage = default_spec(out) or ""
    for prefix in ("sqlite:///", "jsonl:"):
        if storage.startswith(prefix):
            path = storage[len(prefix):]
            return None if path in ("", ":memory:") else Path(path)
    return None


def lock_path(store_file: Path) -> Path:
    return store_file.with_name(store_file.name + SUFFIX)


@contextlib.contextmanager
def run_lock(storage: str | None, out: str | Path | None, what: str | None = None) -> Iterator[Path | None]:
    """Hold the single-writer lock of the search's local store while the block runs (no-op for
    shared or in-memory stores); yields the lock file. `what` names the locked thing in a refusal
    (default: the --out folder, or the --storage file when one is given)."""
    store_file = local_store_file(storage, out)
    if store_file is None:
        yield None
        return
    path = lock_path(store_file.resolve())
    created = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out or path.parent}: cannot create the folder ({exc.strerror})") from None
    if what is None:   # a --storage file may hold several studies, in any folder: name the file, not its folder
        what = f"the storage file {store_file}" if storage is not None else str(path.parent)
    fd = _acquire(path, what)
    try:
        yield path
    except BaseException:
        if created:   # a search that failed before writing anything leaves nothing behind
            _remove_if_only_locks(path.parent)
        raise
    finally:
        os.close(fd)   # releases the flock; the file stays (removing it would race a new holder)


def _remove_if_only_locks(folder: Path) -> None:
    try:
        names = os.listdir(folder)
        if all(n.endswith((".lock", ".lock.guard")) for n in names):
            for n in names:
                (folder / n).unlink()
            folder.rmdir()
    except OSError:
        pass


def holder_info(path: Path) -> dict[str, object]:
    """What the lock file says about its holder ({} if empty or unreadable)."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _acquire(path: Path, what: str, tries: int = 3) -> int:
    import fcntl
    for _ in range(tries):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise NasError(f"cannot create the lock file {path} ({exc.strerror}); is the folder writable?") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise NasError(f"cannot lock {path} ({exc.strerror})") from None
            info = _busy_holder(path)
            if _is_stale(info) and _break(path, info):
                continue
            raise RunLockedError(_refusal(what, info)) from None
        if not _same_file(fd, path):   # replaced by a takeover between open and flock: start over
            os.close(fd)
            continue
        _write_info(fd)
        return fd
    raise RunLockedError(f"cannot take the lock {path}: it keeps being replaced by other searches")


def _busy_holder(path: Path, wait_s: float = 1.0) -> dict[str, object]:
    """The holder's info; a holder that has just locked may not have written it yet: wait a little."""
    deadline = time.monotonic() + wait_s
    while True:
        info = holder_info(path)
        if info or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def _is_stale(info: dict[str, object]) -> bool:
    """The recorded holder is a process of this host that no longer exists."""
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # alive, another user's
        return False
    return False


def _break(path: Path, info: dict[str, object]) -> bool:
    """Replace a lock file whose recorded holder is dead; serialised by a guard lock so two
    searches taking over at once cannot both win."""
    import fcntl
    guard = os.open(path.with_name(path.name + ".guard"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if holder_info(path) != info:      # someone else took over meanwhile
            return True
        log.warning("lock %s: holder pid %s on %s is gone (a child kept the lock open); taking over",
                    path, info.get("pid"), info.get("host"))
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True
    finally:
        os.close(guard)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _write_info(fd: int) -> None:
    info = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    data = json.dumps(info).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _refusal(what: str, info: dict[str, object]) -> str:
    who = (f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}" if info
           else "a process that has not said who it is")
    other = "--storage file (one search at a time on a SQLite or jsonl file, whatever its --study)" \
        if what.startswith("the storage file") else "--out"
    return (f"{what} is in use by another search ({who}); wait for it or stop it, or use another "
            f"{other}. Searches that should work on one study together need a shared store: "
            f"--storage postgresql://USER@HOST/DB (or journal:PATH) --study NAME")
