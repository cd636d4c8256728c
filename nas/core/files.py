"""Atomic file writes: readers (and a search killed mid-write) never see half a file."""
from __future__ import annotations

import logging
import os
import stat
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)
#: a hidden temporary file `.NAME.XXXXXXXX[.suffix]` older than this was left by a killed writer
STALE_TEMP_S = 15 * 60
_TEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")   # tempfile's random part, 8 of them
_TEMP_SUFFIXES = ("", "pt", "onnx", "tmp", "ts", "probe")


def clean_stale_temps(path: str | Path, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Remove the hidden temporary files of `path` (`.NAME.XXXXXXXX[.pt|.onnx|...]`, made by mkstemp
    beside it) that a writer killed between write and rename (SIGKILL) left, once older than
    `older_than_s` (a live writer's file is younger: it is renamed within seconds). Called before each
    atomic write of `path`, so the next run cleans up. Returns the removed files."""
    path = Path(path)
    prefix = f".{path.name}."
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix)]
    except OSError:
        return []
    removed, now = [], time.time()
    for name in names:
        stem, _, suffix = name[len(prefix):].partition(".")
        if len(stem) != 8 or not set(stem) <= _TEMP_CHARS or suffix not in _TEMP_SUFFIXES:
            continue
        tmp = path.parent / name
        try:
            st = os.lstat(tmp)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime > older_than_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    if removed:
        log.info("removed %d stale temporary file(s) of killed writes: %s", len(removed),
                 ", ".join(str(r) for r in removed))
    return removed


def hidden_temp(path: str | Path, suffix: str = "") -> str:
    """A new hidden temp file `.NAME.XXXXXXXX<suffix>` beside `path`, for a write that ends by renaming it
    onto `path`; the temps of earlier writes of `path` that were killed before their rename go first."""
    path = Path(path)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    return tmp


def read_gzip_text(path: str | Path, what: str = "data file") -> str:
    """The text of a gzip file; a missing or non-gzip file raises NasError naming it."""
    import gzip

    from nas.core.errors import NasError
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:  # missing file, or not gzip
        raise NasError(f"cannot read {what} {path}: {exc}") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; tables and results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_writable(path: str | Path, what: str) -> Path:
    """Raise NasError unless a file can be written at `path` (a folder is made where missing, a
    probe file is created and removed): checked before long work, so that nothing measured is lost.
    `what` names the option in the message (e.g. "--out")."""
    from nas.core.errors import NasError, UsageError
    path = Path(path)
    if path.is_dir():   # a usage error (exit 2): a folder where a file is asked for
        raise UsageError(f"{what} {path} is a folder; give a file path")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise NasError(f"{what} {path}: {above} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise NasError(f"{what} {path}: cannot write in {path.parent} ({exc.strerror or exc})") from None
    return path


def write_failure(path: str | Path, exc: BaseException) -> "Exception":
    """A NasError of one line for a write of `path` that failed with `exc`: disk full (no space, or
    the process's file size limit, `ulimit -f`) says so, whatever words the writer used (torch says
    "unexpected pos"), and so does a read-only or immutable folder."""
    import errno
    import resource
    import shutil

    from nas.core.errors import NasError
    path = Path(path)
    code = getattr(exc, "errno", None)
    why = {errno.ENOSPC: "disk full (no space left on the device)",
           errno.EFBIG: "disk full for this process (file size limit, ulimit -f, reached)",
           errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
           errno.EACCES: "permission denied", errno.EPERM: "operation not permitted (an immutable file or folder?)",
           }.get(code or -1)
    if why is None:
        try:
            free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free
        except OSError:
            free = None
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if free is not None and free < 1 << 20:
            why = f"disk full ({free} bytes free)"
        elif limit != resource.RLIM_INFINITY:
            why = f"disk full for this process (file size limit, ulimit -f, of {limit} bytes)"
        else:
            text = str(exc).strip().splitlines()
            why = f"{type(exc).__name__}: {text[0][:200] if text else ''}"
    return NasError(f"cannot write {path}: {why}; nothing was written there")
