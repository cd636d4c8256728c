"""The single-writer lock of a local store, with real processes: a second search on a running one is
refused naming the holder, two started together give one run and one refusal, a SIGKILLed holder or a
dead holder whose child kept the lock open never leaves a stuck lock."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nas.store.lock import RunLockedError, holder_info, local_store_file, lock_path, run_lock
from nas.store.study import open_store

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def search_cmd(out: Path, table: Path, trials: int, proxy: str = "params") -> list[str]:
    return [sys.executable, "-m", "nas.cli", "search", "--space", "mbconv", "-o", "width_mult=0.25",
            "-o", "resolution=32", "-o", "num_classes=10", "--target", str(table), "--evaluator-option",
            f"proxy={proxy}", "--trials", str(trials), "--seed", "1", "--out", str(out), "--quiet"]


def hold(path: Path, extra: str = "") -> subprocess.Popen[str]:
    """A process that takes the lock of store `path`, says 'held', then runs `extra` and sleeps."""
    code = textwrap.dedent(f"""
        import os, sys, time
        from nas.store.lock import run_lock
        with run_lock("sqlite:///{path}", None):
            print("held", flush=True)
            {extra}
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_which_stores_are_locked(tmp_path: Path) -> None:
    assert local_store_file(None, tmp_path) == (tmp_path / "trials.db").resolve()
    assert local_store_file(f"jsonl:{tmp_path}/t.jsonl", None) == tmp_path / "t.jsonl"
    assert local_store_file("postgresql://u@h/db", tmp_path) is None
    assert local_store_file(f"journal:{tmp_path}/j.log", tmp_path) is None
    assert local_store_file(None, None) is None and local_store_file("sqlite:///:memory:", None) is None
    with run_lock("postgresql://u@h/db", tmp_path) as held:   # shared stores: no lock at all
        assert held is None


def test_second_holder_is_refused_with_the_holders_identity(tmp_path: Path) -> None:
    db = tmp_path / "trials.db"
    proc = hold(db)
    try:
        with pytest.raises(RunLockedError) as err, run_lock(f"sqlite:///{db}", None):
            pass
        msg = str(err.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in msg and "postgresql://" in msg and "\n" not in msg
        assert holder_info(lock_path(db))["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_sigkilled_holder_leaves_no_stuck_lock(tmp_path: Path) -> None:
    db = tmp_path / "trials.db"
    proc = hold(db)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with run_lock(f"sqlite:///{db}", None) as path:
        assert holder_info(path)["pid"] == os.getpid()   # taken at once, no waiting for a timeout


def test_dead_holder_whose_child_keeps_the_lock_is_taken_over(tmp_path: Path) -> None:
    db = tmp_path / "trials.db"
    # the holder forks a child (inheriting the locked descriptor) and dies: the flock stays held by the
    # child, but the recorded holder is dead on this host -> stale
    proc = hold(db, extra="if os.fork() == 0:\n                time.sleep(30); os._exit(0)\n            os._exit(0)")
    proc.wait()
    dead = proc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(dead, 0)
    with run_lock(f"sqlite:///{db}", None) as path:
        assert holder_info(path)["pid"] == os.getpid() != dead


def test_search_on_a_running_search_is_refused_and_the_first_finishes(tmp_path: Path) -> None:
    from tests.test_resume_kill import tiny_table
    table = tiny_table(tmp_path / "t.json")
    out = tmp_path / "run"
    trials = 60   # naswot builds and scores a net per trial: seconds in all (params needs no net: too quick)
    first = subprocess.Popen(search_cmd(out, table, trials, "naswot"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "trials.db.lock").exists() or not holder_info(out / "trials.db.lock"):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.run(search_cmd(out, table, trials, "naswot"), cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 1, second.stderr
    assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    stored = open_store(f"sqlite:///{out / 'trials.db'}", out.name, create=False).trials()
    assert len(stored) == trials and len({t.number for t in stored}) == trials


def test_two_searches_started_together_one_runs_one_refuses(tmp_path: Path) -> None:
    from tests.test_resume_kill import tiny_table
    table = tiny_table(tmp_path / "t.json")
    out = tmp_path / "run"
    procs = [subprocess.Popen(search_cmd(out, table, 20, "naswot"), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 1], results
    refused = next(err for rc, err in results if rc == 1)
    assert "in use by another search" in refused and "Traceback" not in refused
    assert len(open_store(f"sqlite:///{out / 'trials.db'}", out.name, create=False).trials()) == 20
