"""Run the README's commands in parallel lanes without breaking their order where it matters (CI time).

The README is a user's session: later lines read what earlier lines wrote (`runs/p1` made by a search, then
resumed, trained, exported, ...). Lines that share no file are independent, so CI may run them side by side
on its two cores. `groups()` joins steps that name a common file or folder (`runs/<name>`, `deploy/`,
`net.onnx`, `README.md`, ...), that use Ray (`ray stop` stops every Ray on the machine, so Ray lines run one
after another), or that run inside a folder an earlier line made; each group keeps README order, and
`run_lanes()` hands whole groups to N worker threads, the larger groups first.

Lines whose outcome hangs on timings of this machine (`timed()`: latency profiles and validations,
`--verify`, searches bounding latency on the measured `cpu` / `cpu-int8` targets, whose table is profiled
on first use) run alone: the other lane finishes its step and waits (`Gate`), the test suite included. Side
by side they read up to 1.7x slow: a cpu-int8 table profiled beside other work made the README's int8 bound
"impossible" twice (fastest arch 6.23 ms beside another int8 job, 6.29 ms beside the suite; 3.64 ms on the
dev VM alone) and failed CI. The suite's group starts first and groups with timed steps go last, so the
timed steps mostly run once the suite is done.

The grouping reads the command text, so a README line that uses another line's output without naming it
would race; every such case in today's README names its files (tests/test_rough_edges4.py checks the groups
of the lines known to depend on each other).
"""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Protocol

#: a word that may be a path; files are told by their extension, folders by a '/'
_WORD = re.compile(r"[A-Za-z0-9_.~-]+(?:/[A-Za-z0-9_.~-]*)*")
_FILES = (".json", ".onnx", ".csv", ".txt", ".png", ".pt", ".ts", ".md", ".db", ".data")
#: read-only inputs: the repository's own scripts, the user's data folders, python -c module names
_READ_ONLY = ("benchmarks/", "~", "latency.", "nas.", "-")


#: commands whose outcome depends on timings taken on this machine while they run (a search on `cpu` without a
#: bound cannot fail by a slow table, so it runs beside others)
_TIMED = re.compile(r"\blatency (profile|validate)\b|--verify\b|latency_ms\[cpu|--target[ =]cpu(-int8)?\b.*--latency-ms")


class StepLike(Protocol):
    line: int
    run: str | None
    cwd: str


def resources(run: str, cwd: str = "") -> set[str]:
    """The files and folders a command names (`runs/p1/best.json` -> `runs/p1`), 'ray' if it uses Ray, and
    the folder it runs in."""
    found: set[str] = set()
    for word in _WORD.findall(run):
        if word.startswith(_READ_ONLY) or word.startswith("/"):
            continue
        parts = [p for p in word.split("/") if p]
        if not parts:
            continue
        if len(parts) > 1 or word.endswith("/"):
            found.add("/".join(parts[:2]) if parts[0] == "runs" else parts[0])
        elif word.endswith(_FILES):
            found.add(word)
    if re.search(r"\bray\b", run):
        found.add("ray")
    if cwd:
        found.add(cwd.strip("/"))
    return found


def step_resources(step: StepLike) -> set[str]:
    """`resources` of a step; the test suite also starts and stops Ray clusters of its own, so it never
    runs beside the README's Ray lines."""
    found = resources(step.run or "", step.cwd)
    if getattr(step, "how", "") == "tests":
        found.add("ray")
    return found


def timed(step: StepLike) -> bool:
    """Does the step time this machine (and so must not share the CPU with another README step)?"""
    return bool(_TIMED.search(step.run or ""))


class Gate:
    """Steps hold the gate shared, timed steps exclusively; a waiting timed step keeps new shared steps out
    (else two busy lanes would starve it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    def acquire(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                self._waiting += 1
                self._cond.wait_for(lambda: not self._exclusive and self._shared == 0)
                self._waiting -= 1
                self._exclusive = True
            else:
                self._cond.wait_for(lambda: not self._exclusive and self._waiting == 0)
                self._shared += 1

    def release(self, exclusive: bool) -> None:
        with self._cond:
            if exclusive:
                self._exclusive = False
            else:
                self._shared -= 1
            self._cond.notify_all()


def groups(steps: list[StepLike]) -> list[list[StepLike]]:
    """Steps joined (union-find) when they share a resource; each group in README order, groups in the
    order of their first step."""
    parent = list(range(len(steps)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    last: dict[str, int] = {}
    for i, step in enumerate(steps):
        for key in step_resources(step):
            if key in last:
                parent[root(i)] = root(last[key])
            last[key] = i
    out: dict[int, list[StepLike]] = {}
    for i, step in enumerate(steps):
        out.setdefault(root(i), []).append(step)
    return list(out.values())


def run_one(command: str, cwd: Path, env: dict[str, str], timeout: float, tail: int = 1500) -> tuple[int, float, str]:
    """(exit status, CPU seconds of the command and its children, the last `tail` characters of its output;
    0: all of it). CPU comes from wait4 on this child alone: with lanes side by side RUSAGE_CHILDREN would
    mix them."""
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        killed: list[bool] = []

        def kill() -> None:
            killed.append(True)
            os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    text = text[-tail:] if tail else text
    if killed:
        rc, text = 124, f"timed out after {timeout:.0f} s: {text[-800:]}"
    return rc, usage.ru_utime + usage.ru_stime, text


def _order(group: list[StepLike], first: Callable[[StepLike], bool]) -> int:
    """0: a group with a `first` step (the suite, the longest step: it starts at once); 2: a group with a
    timed step (last, when the suite is most likely done: a timed step waits for it); 1: the rest. Within a
    class, more steps first (long chains do not finish last)."""
    if any(first(step) for step in group):
        return 0
    return 2 if any(timed(step) for step in group) else 1


def run_lanes(todo: list[list[StepLike]], lanes: int, do: Callable[[StepLike, int], bool],
              keep_going: bool, first: Callable[[StepLike], bool] = lambda step: False) -> None:
    """Run each group's steps in order on `lanes` threads; `do(step, lane)` returns False on failure, which
    ends that group and (unless `keep_going`) stops lanes from starting new groups. A `timed` step runs
    while no other step does; groups with a `first` step start first."""
    work: queue.Queue[list[StepLike]] = queue.Queue()
    for group in sorted(todo, key=lambda g: (_order(g, first), -len(g))):
        work.put(group)
    stop = threading.Event()
    gate = Gate()

    def lane(n: int) -> None:
        while not stop.is_set():
            try:
                group = work.get_nowait()
            except queue.Empty:
                return
            for step in group:
                alone = timed(step)
                gate.acquire(alone)
                try:
                    ok = do(step, n)
                finally:
                    gate.release(alone)
                if not ok:
                    if not keep_going:
                        stop.set()
                    break

    threads = [threading.Thread(target=lane, args=(n,), daemon=True) for n in range(max(1, lanes))]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"{len(todo)} groups on {len(threads)} lanes in {time.monotonic() - t0:.0f} s wall", flush=True)
