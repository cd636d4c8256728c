"""`torchrun --nproc_per_node=2 nas train` on CPU (gloo): the same accuracy as one process, every
sample at most once per epoch (checked on the gathered shard indices), one set of output files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCH = "k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3"
ARGS = ["train", "--space", "mbconv", "--arch", ARCH, "-o", "resolution=32", "-o", "width_mult=0.25",
        "--dataset", "synthetic:301", "--epochs", "4", "--batch-size", "20", "--lr", "0.05",
        "--warmup-epochs", "0.5", "--seed", "3", "--quiet", "--json"]


def _run(cmd: list[str], tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path: Path) -> None:
    one = _run([sys.executable, "-m", "nas.cli", *ARGS, "--torch-threads", "1", "--out", str(tmp_path / "one")],
               tmp_path)
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "nas.cli", *ARGS, "--out", str(tmp_path / "two")], tmp_path)
    assert one["world_size"] == 1 and two["world_size"] == 2
    # 301 samples in batches of 20 (the last partial one dropped): 300 a epoch, and with two processes
    # 150 each, disjoint - the same 15 global batches as one process
    assert all(h["seen"] == h["distinct"] == 300 for h in one["history"] + two["history"])
    assert one["accuracy"] > 0.8 and abs(one["accuracy"] - two["accuracy"]) <= 0.05
    # only rank 0 wrote: one set of files, and nothing stray in the working folder
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [   # the lock stays: nas/store/lock.py
        "checkpoint.pt", "checkpoint.pt.lock", "model.onnx", "model.pt", "result.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]
    saved = json.loads((tmp_path / "two" / "result.json").read_text())
    assert saved["world_size"] == 2 and saved["accuracy"] == two["accuracy"]
