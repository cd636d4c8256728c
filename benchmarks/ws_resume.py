"""Kill/resume histories of the four weight-sharing trainers (nas/training/resume.py).

Each trainer runs 2 epochs of 3 steps on a tiny task uninterrupted, then again stopped by a
KeyboardInterrupt after step 5 with the state saved every 2 steps (so step 5 is lost and redone),
then continued by a fresh start (new net and optimizers) from the saved state. Prints each epoch's
loss of both runs and the largest weight difference at the end.

    OMP_NUM_THREADS=1 python benchmarks/ws_resume.py
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from test_ws_resume import TRAINERS, Stop  # noqa: E402  (the same tiny setups as the tests)

from nas.training.resume import StepCheckpoint  # noqa: E402


def main() -> None:
    for name, trainer in TRAINERS.items():
        t0 = time.process_time()
        whole, net = trainer(StepCheckpoint(None, {}))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.pt"
            try:
                trainer(Stop(path, {"run": name}, every=2, at=5))
            except KeyboardInterrupt:
                pass
            ck = StepCheckpoint(path, {"run": name}, every=2)
            hist, again = trainer(ck)
        key = "ce" if "ce" in whole[0] else "loss"
        diff = max(float((a - b).abs().max()) for a, b in zip(net.state_dict().values(), again.state_dict().values())
                   if a.is_floating_point() and a.numel())
        print(f"{name:15s} resumed at step {ck.resumed['step']} of {ck.resumed['steps']}; "   # type: ignore[index]
              f"{key} per epoch uninterrupted {[round(h[key], 6) for h in whole]} resumed "
              f"{[round(h[key], 6) for h in hist]}; max |weight diff| {diff:.2e}; cpu {time.process_time() - t0:.1f} s")


if __name__ == "__main__":
    main()
