"""Torn records of an Optuna journal file (`--storage journal:PATH`) set aside before it is opened.

Optuna appends each record as one JSON line. A write that fails half-way (disk full, `ulimit -f`)
leaves the last line without its newline; Optuna's reader skips such a tail, but the next append
lands after it, making one undecodable line in the middle, and from then on every reader raises
and no search can open the study. So, before a journal is opened, under Optuna's own journal lock:

* a last line without a newline (a torn record) is cut off the file;
* a line that does not decode but ends in a whole record (a torn record with a later record
  appended to it by a search before this fix) keeps that record and loses the fragment;
* any other undecodable line is removed.

What is removed is kept, byte for byte, in ``PATH.torn-<UTC time>`` and named in a warning: nothing
is silently lost, and the study opens.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

#: how every record of Optuna's journal starts (json.dumps of a dict whose first key is op_code)
RECORD_START = b'{"op_code":'


def _decodes(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:   # JSONDecodeError, UnicodeDecodeError
        return False


def split_torn(data: bytes) -> tuple[bytes, bytes]:
    """(the journal with its torn records removed, the removed bytes); data unchanged when whole."""
    if not data:
        return data, b""
    lines = data.splitlines(keepends=True)
    kept: list[bytes] = []
    torn: list[bytes] = []
    for i, line in enumerate(lines):
        whole = line.endswith(b"\n")
        if whole and _decodes(line):
            kept.append(line)
            continue
        if not whole and i == len(lines) - 1:
            torn.append(line)
            continue
        start = line.rfind(RECORD_START)
        if whole and start > 0 and _decodes(line[start:]):
            torn.append(line[:start] + b"\n")
            kept.append(line[start:])
        else:
            torn.append(line if whole else line + b"\n")
    if not torn:
        return data, b""
    return b"".join(kept), b"".join(torn)


def set_aside_torn_records(path: str | Path) -> Path | None:
    """Remove the torn records of the journal at `path` (see the module doc), keeping them in a
    side file that is returned (None when the journal is whole or missing)."""
    from optuna.storages.journal import JournalFileSymlinkLock
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as fh:   # cheap check first: a whole journal ends with a newline
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return None
        fh.seek(size - 1)
        ends_whole = fh.read(1) == b"\n"
    data = path.read_bytes() if not ends_whole else None
    if data is None:
        # whole tail: only a journal broken before this fix has a torn record inside; look for one
        data = path.read_bytes()
        if RECORD_START not in data[1:] or all(_decodes(line) for line in data.splitlines()):
            return None
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        kept, torn = split_torn(data)
        if not torn:
            return None
        side = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        with open(side, "ab") as fh:
            fh.write(torn)
            fh.flush()
            os.fsync(fh.fileno())
        if data.startswith(kept):   # only the tail was torn: cut it off, earlier offsets stay
            os.truncate(path, len(kept))
        else:
            tmp = path.with_name(f".{path.name}.repair")
            tmp.write_bytes(kept)
            os.replace(tmp, path)
    finally:
        lock.release()
    log.warning("journal %s: %d bytes of torn records (a write that failed half-way) set aside in %s; "
                "the study opens without them", path, len(torn), side)
    return side
