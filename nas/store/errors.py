"""One clear line for a storage that cannot be opened or used: the URL with its password masked, what
went wrong, and the fix. `make_storage` (nas/store/study.py) routes every failure to open a storage through
`describe`, so no traceback and no password ever reaches the terminal.

`fatal_cause` recognises the failures no retry can cure - a full disk, a corrupt database file - under
the wrappers Optuna and SQLAlchemy put around them (Optuna turns any failed commit into "invalid data
in the commit"), so the store stops at once with the cause and the fix instead of retrying 8 times."""
from __future__ import annotations

import errno
import re
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")

#: driver module -> how to install it
DRIVERS = {
    "psycopg": "pip install 'nas[postgres]'",
    "psycopg2": "pip install 'nas[postgres]' and use postgresql+psycopg:// (or pip install psycopg2-binary)",
    "pymysql": "pip install pymysql",
    "MySQLdb": "pip install mysqlclient, or use mysql+pymysql:// with pip install pymysql",
}
SPEC_FORMS = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST[:PORT]/DB, mysql+pymysql://..., journal:PATH, jsonl:PATH"


def mask(spec: str) -> str:
    """`spec` with the password of a URL replaced by ***."""
    return re.sub(r"^([A-Za-z0-9+.\-]+://[^:/@]*):[^@/]*@", r"\1:***@", spec)


FULL, CORRUPT = "full", "corrupt"
_SQLITE_CODES = {13: FULL, 11: CORRUPT, 26: CORRUPT}   # SQLITE_FULL, SQLITE_CORRUPT, SQLITE_NOTADB
_SQLSTATES = {"53100": FULL, "XX001": CORRUPT, "XX002": CORRUPT}   # PostgreSQL disk_full, data/index_corrupted
_ERRNOS = {errno.ENOSPC: FULL, getattr(errno, "EDQUOT", errno.ENOSPC): FULL}
_WORDS = {"database or disk is full": FULL, "no space left on device": FULL, "disk quota exceeded": FULL,
          "database disk image is malformed": CORRUPT, "file is not a database": CORRUPT}


def fatal_cause(exc: BaseException) -> tuple[str, str] | None:
    """(FULL or CORRUPT, the driver's own words) if `exc`, or an error it wraps, says the disk is full or
    the database file is corrupt; None for anything else (which may be transient)."""
    todo: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        words = " ".join(str(e).split())[:200]
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            return _ERRNOS[e.errno], words
        code = getattr(e, "sqlite_errorcode", None)
        if isinstance(code, int) and code & 0xFF in _SQLITE_CODES:
            return _SQLITE_CODES[code & 0xFF], words
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(state, str) and state in _SQLSTATES:
            return _SQLSTATES[state], words
        if isinstance(e, OSError) or type(e).__module__ == "sqlite3":   # the driver's words, not a wrapper's
            for text, kind in _WORDS.items():
                if text in words.lower():
                    return kind, words
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return None


def fatal_message(where: str, path: str | None, kind: str, words: str, what: str) -> str:
    """The one line for a full disk or a corrupt database met while doing `what`."""
    if kind == FULL:
        return (f"trial store {where}: the disk is full ({words}) while {what}; free space on the disk that "
                f"holds it, then run the same command again: finished trials are kept")
    aside = f"move it aside (mv {path} {path}.corrupt) and" if path else "restore it from a backup, or"
    return (f"trial store {where} is corrupt ({words}) while {what}; {aside} start a new search there: "
            f"--resume cannot continue from a corrupt store")


def storage_location(storage: Any) -> str:
    """What to call a storage in messages: its URL (password masked) or journal file."""
    url = getattr(storage, "url", None)
    if isinstance(url, str):
        return mask(url)
    backend = getattr(storage, "_backend", None)
    path = getattr(backend, "_file_path", None)
    return f"journal:{path}" if path else type(storage).__name__


def retry(fn: Callable[[], T], what: str, where: str, error: type[Exception], tries: int = 8) -> T:
    """Call a storage operation, retrying transient lock/connection errors with back-off; a full disk
    or a corrupt database (`fatal_cause`) raises `error` at once with the cause and the fix."""
    import optuna
    for i in range(tries):
        try:
            return fn()
        except Exception as exc:
            fatal = fatal_cause(exc)
            if fatal:
                path = where[len("sqlite:///"):] if where.startswith("sqlite:///") else None
                raise error(fatal_message(path or where or "?", path, fatal[0], fatal[1], what)) from None
            if not isinstance(exc, optuna.exceptions.StorageInternalError):
                raise
            if i == tries - 1:
                raise error(f"trial store {where}: {what} failed {tries} times: {exc}") from None
            time.sleep(min(2.0, 0.05 * 2 ** i))
    raise AssertionError("unreachable")


def describe(spec: str, exc: BaseException) -> tuple[str, bool]:
    """(one-line message, is_usage_error) for an exception raised while opening storage `spec`."""
    where = f"storage {mask(spec)}"
    fatal = fatal_cause(exc)
    if fatal:
        path = spec[len("sqlite:///"):] if spec.startswith("sqlite:///") else None
        return fatal_message(mask(spec), path, fatal[0], fatal[1], "opening it"), False
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if isinstance(exc, ImportError):
        module = _missing_module(exc)
        fix = DRIVERS.get(module, f"install the Python package that provides {module or 'the driver'}")
        return f"{where} needs the database driver {module or '?'}, which is not installed: {fix}", False
    if name == "NoSuchModuleError" or name == "ArgumentError":
        return f"{where} is not a storage URL SQLAlchemy knows ({_first(text)}); valid forms: {SPEC_FORMS}", True
    low = text.lower()
    if "password authentication failed" in low or "access denied" in low or "no password supplied" in low:
        return (f"{where}: the server refused the user or password; fix the user:password in the URL "
                f"(the password is masked here)"), True
    if "does not exist" in low and "database" in low:
        db = spec.rsplit("/", 1)[-1].split("?")[0]
        return f"{where}: the server has no database {db!r}; create it (createdb {db}) or name another", True
    if any(s in low for s in ("connection refused", "could not connect", "can't connect", "timeout expired",
                              "could not translate host name", "name or service not known",
                              "no route to host", "connection timed out")):
        return (f"{where}: cannot reach the database server ({_first(text)}); is it running and listening on "
                f"that host and port, and does a firewall let this machine in?"), False
    return f"{where} cannot be opened: {name}: {_first(text)}", False


def _first(text: str, limit: int = 200) -> str:
    """The useful head of a driver message (SQLAlchemy appends a background link and the SQL)."""
    text = re.split(r"\(Background on this error|\[SQL:", text)[0].strip()
    text = re.sub(r"^\([\w.]+\)\s*", "", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing_module(exc: BaseException) -> str:
    """The module an ImportError (or the one it wraps: Optuna re-raises its own) failed to import."""
    seen: BaseException | None = exc
    while seen is not None:
        name = getattr(seen, "name", None)
        found = re.search(r"No module named '([^']+)'", str(seen))
        if name or found:
            return str(name or found.group(1)).split(".")[0]   # type: ignore[union-attr]
        seen = seen.__cause__ or seen.__context__
    return ""
