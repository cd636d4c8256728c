"""`nas train --runner ray`: the torchrun DDP job on Ray actors (gloo on CPU), against one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli.main import main

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[1]
ARCH = "k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3"
ARGS = ["train", "--space", "mbconv", "--arch", ARCH, "-o", "resolution=32", "-o", "width_mult=0.25",
        "--dataset", "synthetic:301", "--epochs", "4", "--batch-size", "20", "--lr", "0.05",
        "--warmup-epochs", "0.5", "--seed", "3", "--quiet", "--json", "--torch-threads", "1"]


def _run(extra: list[str], tmp: Path) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "nas.cli", *ARGS, *extra], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
@pytest.mark.ray
def test_two_ray_workers_match_one_process(tmp_path: Path) -> None:
    one = _run(["--out", str(tmp_path / "one")], tmp_path)
    two = _run(["--runner", "ray", "--workers", "2", "--out", str(tmp_path / "two")], tmp_path)
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert all(h["seen"] == h["distinct"] == 300 for h in one["history"] + two["history"])
    assert one["accuracy"] > 0.8 and abs(one["accuracy"] - two["accuracy"]) <= 0.05
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [   # the lock stays: nas/store/lock.py
        "checkpoint.pt", "checkpoint.pt.lock", "model.onnx", "model.pt", "result.json"]
    assert json.loads((tmp_path / "two" / "result.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("extra, env, message", [
    (["--workers", "0"], {}, "--workers must be at least 1, got 0"),
    (["--workers", "2"], {"WORLD_SIZE": "2"}, "--runner ray starts its own processes; launch it without torchrun"),
])
def test_ray_bad_input_is_one_line(extra: list[str], env: dict[str, str], message: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = main([*ARGS, "--runner", "ray", *extra, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
