"""Ray outside the test process: a cluster the user started with `ray start --head` (token
authentication, Ray >= 2.59), and an embedded Ray that must not outlive a SIGKILLed search.

Each test starts its own processes and kills exactly those (their process group / the pids it saw),
never `ray stop`, which would stop every Ray on the machine."""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from nas.cluster import ray_watchdog

ROOT = Path(__file__).resolve().parents[1]
SEARCH = [sys.executable, "-c", "import sys; from nas.cli.main import main; sys.exit(main())", "search"]
RAY_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    st = ray_watchdog._stat(pid)
    return st is not None and st[1] != "Z"


@pytest.fixture
def ray_head() -> Iterator[tuple[str, Path]]:
    """`ray start --head` on 127.0.0.1 with a token in a temporary HOME (as any earlier ray.init leaves
    one in ~/.ray/auth_token): Ray then turns token authentication on. Yields (address, home)."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("no ray command line next to this python")
    tmp = Path(tempfile.mkdtemp(prefix="nr", dir="/tmp"))   # short: Ray's socket paths must fit 107 bytes
    home = tmp / "home"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(secrets.token_hex(32))
    port = _free_port()
    proc = subprocess.Popen([str(ray_cli), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                             "--temp-dir", str(tmp / "ray"), "--num-cpus", "2", "--include-dashboard", "false",
                             "--disable-usage-stats"], env=_env(home), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out = proc.communicate(timeout=120)[0].decode()
        assert proc.returncode == 0, out[-2000:]
        assert "Token authentication is enabled" in out   # the situation the issue describes
        yield f"127.0.0.1:{port}", home
    finally:
        with_session = tmp.as_posix().encode()
        for sig in (signal.SIGTERM, signal.SIGKILL):   # the cluster's processes: its process group
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(2)
        for pid in ray_watchdog._pids():   # workers make their own groups; they carry the folder or raylet pid
            if with_session in ray_watchdog._cmdline(pid) and _alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.ray
def test_search_on_a_cluster_started_with_ray_start(ray_head: tuple[str, Path], tmp_path: Path) -> None:
    """Failed before: InvalidAuthToken for 25 s, then 'Failed to connect', unless RAY_AUTH_MODE=token."""
    address, home = ray_head
    args = [*SEARCH, "--space", "mbconv", "--target", "pixel1", "--evaluator-option", "proxy=params",
            "--trials", "4", "--runner", "ray", "--address", address, "--quiet"]
    t0 = time.perf_counter()
    ok = subprocess.run([*args, "--out", str(tmp_path / "ok")], env=_env(home), capture_output=True, timeout=300)
    assert ok.returncode == 0, ok.stderr.decode()[-3000:]
    assert "best of 4 trials" in ok.stdout.decode(), ok.stdout.decode()
    assert "InvalidAuthToken" not in ok.stderr.decode()
    with sqlite3.connect(tmp_path / "ok" / "trials.db") as con:
        assert con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0] == 4
    ok_s = time.perf_counter() - t0

    wrong = subprocess.run([*args, "--out", str(tmp_path / "wrong")], env=_env(home, RAY_AUTH_TOKEN="0" * 64),
                           capture_output=True, timeout=300)
    none = subprocess.run([*args, "--out", str(tmp_path / "none")], env=_env(tmp_path), capture_output=True,
                          timeout=300)
    off = subprocess.run([*args, "--out", str(tmp_path / "off")], env=_env(home, RAY_AUTH_MODE="disabled"),
                         capture_output=True, timeout=300)
    for proc, cause in ((wrong, "the token here (RAY_AUTH_TOKEN) is not the cluster's"),
                        (none, "this machine has no Ray token"), (off, "RAY_AUTH_MODE=disabled here")):
        err = proc.stderr.decode().strip()
        assert proc.returncode == 1, err
        assert err.count("\n") == 0, err   # one line: no Ray warnings, no traceback
        assert err.startswith(f"nas: error: cannot connect to the Ray cluster at --address {address}: "
                              f"it uses token authentication"), err
        assert cause in err, err
    assert "ray get-auth-token" in wrong.stderr.decode() and "ray get-auth-token" in none.stderr.decode()
    print(f"search through --address: {ok_s:.1f} s")

    # without --address a search starts its own Ray, even with another one named by RAY_ADDRESS (or by the
    # file `ray start` leaves); it failed: "When connecting to an existing cluster, num_cpus ... must not be provided"
    own = subprocess.run([*args[:args.index("--address")], "--quiet", "--workers", "1", "--out", str(tmp_path / "own")],
                         env=_env(home, RAY_ADDRESS=address), capture_output=True, timeout=300)
    assert own.returncode == 0, own.stderr.decode()[-3000:]
    assert "best of 4 trials" in own.stdout.decode()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc")
def test_sigkill_leaves_no_ray_process_behind(tmp_path: Path) -> None:
    """Failed before: the raylet's DashboardAgent and RuntimeEnvAgent lived on for 60 s (they report
    the raylet's death to the dead GCS with a 60 s timeout)."""
    pytest.importorskip("ray")
    out = tmp_path / "run"
    proc = subprocess.Popen([*SEARCH, "--runner", "ray", "--workers", "2", "--trials", "400", "--quiet",
                             "--out", str(out)], env=_env(Path.home()), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    db, deadline = out / "trials.db", time.time() + 240
    while time.time() < deadline and proc.poll() is None:   # until a trial finished on Ray
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:   # never creates the file
                if con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]:
                    break
        except sqlite3.Error:
            pass
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    time.sleep(1)   # a second for the watchdog's first look (it starts right after ray.init)
    session = ray_watchdog.descendants(proc.pid)
    names = {pid: ray_watchdog._cmdline(pid).decode(errors="replace") for pid in session}
    names = {pid: n.replace("\0", " ").strip() for pid, n in names.items()}
    assert any("raylet" in n for n in names.values()) and any("Agent" in n for n in names.values()), names
    proc.kill()
    proc.wait()
    t0, left = time.time(), dict(session)
    while time.time() - t0 < 15 and left:
        left = {pid: start for pid, start in left.items() if _alive(pid) and ray_watchdog._stat(pid)[2] == start}  # type: ignore[index]
        time.sleep(0.5)
    try:
        assert not left, {pid: names[pid][:80] for pid in left}
        print(f"all {len(session)} Ray processes gone {time.time() - t0:.1f} s after the SIGKILL")
    finally:
        for pid in left:   # do not leave them to the next test
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc")
def test_watchdog_reaps_the_session_and_nothing_else(tmp_path: Path) -> None:
    """The watchdog's choice of processes, on stand-ins: a "raylet" naming the session folder with an
    "agent" below it, a "worker" that carries RAY_RAYLET_PID of the raylet but was orphaned (found only
    by the last sweep), and a bystander child that must survive."""
    session = str(tmp_path / "session_x")
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    spawn = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; "
             "time.sleep(60)']); time.sleep(60)")
    raylet = subprocess.Popen([sys.executable, "-c", spawn, f"--raylet_socket_name={session}/sockets/raylet"])
    bystander = subprocess.Popen([*sleep, "--not-ray"])
    worker = None
    try:
        deadline = time.time() + 30   # until the raylet stand-in has exec'd and started its agent
        while time.time() < deadline and not (session.encode() in ray_watchdog._cmdline(raylet.pid)
                                              and ray_watchdog.descendants(raylet.pid)):
            time.sleep(0.05)
        (agent,) = ray_watchdog.descendants(raylet.pid)
        found = ray_watchdog.session_processes(os.getpid(), session, {})
        assert set(found) == {raylet.pid, agent}
        since = ray_watchdog._stat(raylet.pid)[2]   # type: ignore[index]
        worker = subprocess.Popen(sleep, env={**os.environ, "RAY_RAYLET_PID": str(raylet.pid)})
        time.sleep(0.5)
        assert set(ray_watchdog.leftovers(found, since)) == {raylet.pid, agent, worker.pid}
        assert ray_watchdog.reap(found, since, grace_s=2.0) == 3
        assert raylet.wait(timeout=10) != 0 and worker.wait(timeout=10) != 0
        deadline = time.time() + 10
        while time.time() < deadline and _alive(agent):
            time.sleep(0.05)
        assert ray_watchdog.leftovers(found, since) == {}
        assert bystander.poll() is None
        assert ray_watchdog.reap(found, since) == 0   # nothing left to signal
    finally:
        for p in (raylet, bystander, worker):
            if p is not None:
                p.kill()
                p.wait()
