"""A watchdog that takes an embedded Ray down with the search that started it, even after a SIGKILL.

Ray starts its own processes (gcs_server, raylet, monitor) with PR_SET_PDEATHSIG, so they die with the
driver; but the raylet's agents (DashboardAgent, RuntimeEnvAgent) notice their raylet's death, then try to
report it to the dead GCS with a fixed 60 s timeout (ray._private.utils.publish_error_to_driver), so they
lingered 60-90 s after a SIGKILLed `nas search --runner ray`.

`nas.cluster.ray_session.start_watchdog` runs this file once Ray is up, as its own process
(`python -I THIS_FILE SESSION_DIR`: standard library only, it never imports the engine) in a new session,
with a pipe as stdin. Every second it notes the processes below the search that belong to that Ray
session - their command line names the session folder, or they run below one that does (the agents and
workers of its raylet) - by pid and start time, so a reused pid is never taken for one of them. When
stdin reaches end of file (the search exited, cleanly or killed) it sends SIGTERM, then SIGKILL after a
short grace, to those still alive and to the workers started since the last look whose environment's
`RAY_RAYLET_PID` names one of them. Nothing else is ever signalled.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

SCAN_EVERY_S = 1.0
GRACE_S = 1.0


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time in clock ticks) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[0].decode(), int(fields[19])


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _tree() -> tuple[dict[int, list[int]], dict[int, int]]:
    """Live processes: parent pid -> child pids, and pid -> start time."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None and st[1] != "Z":
            children.setdefault(st[0], []).append(pid)
            starts[pid] = st[2]
    return children, starts


def descendants(root: int) -> dict[int, int]:
    """Every live process below `root`: pid -> start time."""
    children, starts = _tree()
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = starts[child]
            todo.append(child)
    return out


def _raylet_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for item in f.read().split(b"\0"):
                if item.startswith(b"RAY_RAYLET_PID="):
                    return int(item.split(b"=", 1)[1])
    except (OSError, ValueError):
        return None
    return None


def session_processes(root: int, session_dir: str, known: dict[int, int]) -> dict[int, int]:
    """`known` plus the processes below `root` that belong to the Ray session in `session_dir`: those whose
    command line names the folder (gcs_server, raylet, monitors) and everything below them (the raylet's
    agents and workers, which rename themselves `ray::...`)."""
    children, starts = _tree()
    marker = session_dir.encode()
    ours = dict(known)
    todo = [(root, False)]
    while todo:
        pid, inside = todo.pop()
        for child in children.get(pid, []):
            mine = inside or marker in _cmdline(child)
            if mine:
                ours[child] = starts[child]
            todo.append((child, mine))
    return ours


def leftovers(seen: dict[int, int], since: int) -> dict[int, int]:
    """The processes of `seen` still alive (same start time), plus those started after `since` whose
    RAY_RAYLET_PID names a process of `seen`."""
    out = {}
    for pid in _pids():
        st = _stat(pid)
        if st is None or st[1] == "Z" or pid == os.getpid():
            continue
        if seen.get(pid) == st[2] or (st[2] >= since and _raylet_pid(pid) in seen):
            out[pid] = st[2]
    return out


def _signal_all(targets: dict[int, int], sig: int) -> None:
    for pid, start in targets.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def reap(seen: dict[int, int], since: int, grace_s: float = GRACE_S) -> int:
    """SIGTERM what is left of `seen`, SIGKILL it after `grace_s`; how many processes were signalled."""
    targets = leftovers(seen, since)
    if not targets:
        return 0
    _signal_all(targets, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and leftovers(targets, since):
        time.sleep(0.1)
    _signal_all(leftovers(seen, since), signal.SIGKILL)
    return len(targets)


def main(session_dir: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C stops the search; the watchdog cleans up after it
    parent = os.getppid()
    own = _stat(os.getpid())
    since = own[2] if own else 0
    seen: dict[int, int] = {}
    done = threading.Event()

    def wait_for_eof() -> None:
        while sys.stdin.buffer.read(1024):
            pass
        done.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while True:
        seen = session_processes(parent, session_dir, seen)
        if done.wait(SCAN_EVERY_S):
            break
    reap(seen, since)


if __name__ == "__main__":
    main(sys.argv[1])
