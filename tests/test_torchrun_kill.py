"""Issue 29 / 30: a real `torchrun` agent SIGKILLed during weight-sharing training takes its ranks with it
(nas.training.distributed.stop_with_agent: PR_SET_PDEATHSIG), and the same torchrun command then continues
the training from the state rank 0 wrote (`training: resumed at step K of N`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _state_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:   # not there yet, or being replaced
        return -1


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigkilled_torchrun_agent_stops_its_ranks_and_the_run_resumes(tmp_path: Path) -> None:
    from test_resume_kill import tiny_table
    table = tiny_table(tmp_path / "t.json")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nas.cli",
           "search", "--space", "mbconv", "-o", "width_mult=0.25", "-o", "resolution=32", "-o", "num_classes=10",
           "--target", str(table), "--strategy", "supernet", "--dataset", "synthetic:256", "--epochs", "2",
           "--batch-size", "32", "--trials", "2", "--strategy-option", "checkpoint_every=2", "--strategy-option",
           "calib_batches=1", "--strategy-option", "random_paths=1", "--seed", "1", "--torch-threads", "1",
           "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    agent = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = out / "supernet.state.pt"
    ranks: list[int] = []
    try:
        deadline = time.monotonic() + 600
        while _state_step(state) < 2:   # both ranks are in the training loop: rank 0 saved step 2
            assert agent.poll() is None, agent.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no training step was saved in 600 s"
            time.sleep(0.2)
        ranks = _children(agent.pid)
        assert len(ranks) == 2, ranks
        agent.send_signal(signal.SIGKILL)
        agent.wait(30)
        deadline = time.monotonic() + 60
        while any(_alive(r) for r in ranks) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [r for r in ranks if _alive(r)]
        assert not left, f"ranks {left} outlived their SIGKILLed agent"
    finally:
        for pid in [agent.pid, *ranks]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    saved = _state_step(state)
    assert saved >= 2
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"training: resumed at step {saved} of 16 from {state}" in done.stdout, done.stdout
    assert not state.exists() and (out / "supernet.pt").is_file()
