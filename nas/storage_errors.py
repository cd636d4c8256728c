"""One clear line for a storage that cannot be opened: the URL with its password masked, what went
wrong, and the fix. `make_storage` (nas/store.py) routes every failure to open a storage through
`describe`, so no traceback and no password ever reaches the terminal."""
from __future__ import annotations

import re

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


def describe(spec: str, exc: BaseException) -> tuple[str, bool]:
    """(one-line message, is_usage_error) for an exception raised while opening storage `spec`."""
    where = f"storage {mask(spec)}"
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
