"""Mid-training checkpoints of the weight-sharing trainers (nas/training/resume.py): each trainer stopped
part-way (after some steps were saved, some not) and continued by a fresh process-like start (new net,
new optimizers, the same seed) ends with the uninterrupted run's history and weights; a state of another
run or a corrupt one is refused with one line, nothing overwritten."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from latency.targets import lut_model
from nas.core.errors import UsageError
from nas.training.resume import BatchCursor, StepCheckpoint
from search_spaces.catalog import get_space

MBCONV = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=4)
DARTS = get_space("nasnet", variant="darts", channels=4, cells=1, num_classes=4, resolution=8)


def tiny(n: int, res: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    templates = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(9))
    templates = templates.repeat_interleave(res // 4, 2).repeat_interleave(res // 4, 3)
    return templates[y] + 0.5 * torch.randn(n, 3, res, res, generator=g), y


class Stop(StepCheckpoint):
    """Raises KeyboardInterrupt right after global step `at` (steps after the last save are lost)."""

    def __init__(self, *args: Any, at: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def after_step(self, epoch: int, step: int, *args: Any, **kwargs: Any) -> None:
        super().after_step(epoch, step, *args, **kwargs)
        if step == self.at:
            raise KeyboardInterrupt


def _supernet(ck: StepCheckpoint) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from nas.supernet import build_supernet
    from nas.supernet.trainer import SandwichConfig, train_supernet
    torch.manual_seed(0)
    net = build_supernet(MBCONV)
    hist = train_supernet(net, tiny(48, 32), SandwichConfig(epochs=2, batch_size=16, random_paths=1), checkpoint=ck)
    return hist, net


def _single_path(ck: StepCheckpoint) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from nas.differentiable.single_path import LatencyTerm, SinglePathConfig, SinglePathNet, train_single_path
    torch.manual_seed(0)
    net = SinglePathNet(MBCONV)
    cfg = SinglePathConfig(epochs=2, batch_size=16, lam=1.0, latency_ms=40.0, seed=0, warmup_epochs=0)
    term = LatencyTerm.from_lut(MBCONV, lut_model("pixel1", get_space("mbconv")))
    return train_single_path(net, tiny(48, 32), term, cfg, checkpoint=ck), net


def _darts(ck: StepCheckpoint) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from nas.differentiable.darts import DartsConfig, DartsNet, train_darts
    torch.manual_seed(0)
    net = DartsNet(DARTS)
    # 3 weight batches against 2 arch batches: the arch order is drawn again inside an epoch
    hist = train_darts(net, tiny(12, 8), tiny(8, 8, 1), DartsConfig(epochs=2, batch_size=4, warmup_epochs=0),
                       checkpoint=ck)
    return hist, net


def _differentiable(ck: StepCheckpoint) -> tuple[list[dict[str, Any]], torch.nn.Module]:
    from nas.differentiable.proxyless import ArchPolicy, ProxylessConfig, train_proxyless
    from nas.supernet import build_supernet
    torch.manual_seed(0)
    net, policy = build_supernet(MBCONV), ArchPolicy(MBCONV)
    hist = train_proxyless(net, policy, tiny(48, 32), tiny(16, 32, 1), ProxylessConfig(epochs=2, batch_size=16),
                           lambda a: float(len(a.genes)), None, checkpoint=ck)
    return hist, torch.nn.ModuleDict({"net": net, "policy": policy})


TRAINERS: dict[str, Callable[[StepCheckpoint], Any]] = {   # each: 2 epochs of 3 steps
    "supernet": _supernet, "single-path": _single_path, "darts": _darts, "differentiable": _differentiable}


def _same_history(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k in ra:
            if k == "seconds":
                continue
            if isinstance(ra[k], float):
                assert math.isclose(ra[k], rb[k], rel_tol=1e-5, abs_tol=1e-6), (k, ra[k], rb[k])
            else:
                assert ra[k] == rb[k], k


@pytest.mark.parametrize("name", list(TRAINERS))
def test_interrupted_mid_epoch_then_resumed_equals_uninterrupted(tmp_path: Path, name: str) -> None:
    trainer = TRAINERS[name]
    whole, net = trainer(StepCheckpoint(None, {}))
    meta = {"run": name}
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):   # saved at steps 2, 3 (epoch 1) and 4; step 5 is lost
        trainer(Stop(path, meta, every=2, at=5))
    assert path.is_file()
    ck = StepCheckpoint(path, meta, every=2)
    hist, again = trainer(ck)
    assert ck.resumed == {"step": 4, "steps": 6, "epoch": 2, "checkpoint": str(path)}   # inside epoch 2
    _same_history(whole, hist)
    for (k, a), (_, b) in zip(net.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_epoch_boundary_resume_and_a_state_of_another_run_is_refused(tmp_path: Path) -> None:
    whole, _ = _supernet(StepCheckpoint(None, {}))
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        _supernet(Stop(path, {"run": 1}, every=0, at=4))     # saved after epoch 1 (step 3) only
    before = path.read_bytes()
    with pytest.raises(UsageError, match=r"written by another training run \(run 1 \(this run: 2\)\)"):
        _supernet(StepCheckpoint(path, {"run": 2}))
    assert path.read_bytes() == before                       # nothing overwritten
    ck = StepCheckpoint(path, {"run": 1}, every=0)
    hist, _ = _supernet(ck)
    assert ck.resumed == {"step": 3, "steps": 6, "epoch": 1, "checkpoint": str(path)}
    _same_history(whole, hist)
    path.write_bytes(before[: len(before) // 2])             # a truncated file
    with pytest.raises(UsageError, match="is not a readable checkpoint"):
        _supernet(StepCheckpoint(path, {"run": 1}))


def test_batch_cursor_draws_like_batch_indices_and_restores() -> None:
    from nas.supernet.trainer import batch_indices
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    ref = [list(i) for i in batch_indices(33, 8, a)]          # the last batch of 1 is dropped
    cur = BatchCursor(33, 8, b)
    got = [list(cur.next()), list(cur.next())]  # type: ignore[arg-type]
    again = BatchCursor(33, 8, np.random.default_rng(0)).load(cur.state())
    got += [list(i) for i in again]
    assert got == ref and len(ref) == 4 and a.bit_generator.state == b.bit_generator.state
    with pytest.raises(UsageError, match="batches of 8"):
        BatchCursor(33, 16, b).load(cur.state())


# ---- a real `nas search` stopped three ways during supernet training ------------------------------
def _state_step(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["step"])
    except Exception:   # not there yet
        return -1


def _stop_when(proc: Any, state: Path, past: int, sig: int) -> tuple[int, str]:
    import time
    deadline = time.monotonic() + 300
    while _state_step(state) <= past:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"search ended or stalled before step {past} (rc {proc.returncode}):\n{out}\n{err}")
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_search_killed_terminated_interrupted_in_training_resumes_to_the_uninterrupted_history(
        tmp_path: Path) -> None:
    import json
    import signal
    import subprocess
    import sys

    from test_resume_kill import start, tiny_table
    table = tiny_table(tmp_path / "t.json")

    def cmd(out: Path) -> list[str]:
        return [sys.executable, "-m", "nas", "search", "--space", "mbconv", "-o", "width_mult=0.25", "-o",
                "resolution=32", "-o", "num_classes=10", "--target", str(table), "--strategy", "supernet",
                "--dataset", "synthetic:256", "--epochs", "2", "--batch-size", "16", "--trials", "3",
                "--strategy-option", "checkpoint_every=2", "--strategy-option", "calib_batches=1",
                "--strategy-option", "random_paths=1", "--seed", "1", "--out", str(out), "--quiet"]

    whole = subprocess.run(cmd(tmp_path / "whole"), capture_output=True, text=True, timeout=600,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "cut"
    state = out / "supernet.state.pt"
    code, _ = _stop_when(start(cmd(out)), state, 2, signal.SIGKILL)
    assert code == -signal.SIGKILL
    first = _state_step(state)
    code, err = _stop_when(start(cmd(out)), state, first + 2, signal.SIGTERM)
    saved = _state_step(state)
    assert code == 143 and "Traceback" not in err
    assert f"training is saved at step {saved} of 32 in {state}" in err, err
    code, err = _stop_when(start(cmd(out)), state, saved + 2, signal.SIGINT)
    assert code == 130 and "training is saved at step" in err and "Traceback" not in err
    last = _state_step(state)
    done = subprocess.run(cmd(out), capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert f"training: resumed at step {last} of 32" in done.stdout and not state.exists()
    a = json.loads((tmp_path / "whole" / "best.json").read_text())
    b = json.loads((out / "best.json").read_text())
    assert b["training"]["resumed"]["step"] == last
    _same_history(a["training"]["history"], b["training"]["history"])
    assert a["arch"] == b["arch"]
