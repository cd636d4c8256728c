"""A cooperating search process for the tests and benchmarks: `python -m tests.coop_worker SPEC STUDY TRIALS
SLEEP_S START_AT [HEARTBEAT_S [OWNER]]` runs `run_cooperative` on the tiny MBConv space with an evaluator that sleeps
SLEEP_S per arch (an evaluation-bound load that needs no CPU), starting at wall-clock time START_AT, and
prints one JSON line: {"pid", "evaluated", "seconds"}. OWNER (host:pid) replaces the claims' owner, to stand
for a search on another host (whose death only the heartbeat reveals)."""
from __future__ import annotations

import json
import os
import sys
import time

from nas.pipeline.cooperative import open_any_store, run_cooperative
from nas.strategies.catalog import STRATEGIES
from search_spaces.catalog import get_space

SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)


class SleepScore:
    """Score = sum of kernel sizes and expansions; sleeps `seconds` first (stands for training)."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self, arch: object) -> dict[str, float]:
        self.calls += 1
        time.sleep(self.seconds)
        genes = getattr(arch, "genes")
        return {"score": float(sum(int(g[1]) + int(g[3]) for g in genes if g != "skip")),
                "latency_ms": 10.0 - 0.3 * sum(g == "skip" for g in genes)}


def main(argv: list[str]) -> int:
    spec, study, trials, sleep_s, start_at = argv[0], argv[1], int(argv[2]), float(argv[3]), float(argv[4])
    heartbeat = float(argv[5]) if len(argv) > 5 else 1.0
    store = open_any_store(spec, study, space=SPACE, heartbeat_s=heartbeat, params=False)
    if len(argv) > 6:
        store.owner = argv[6]   # type: ignore[union-attr]
    strategy = STRATEGIES.get("evolution")(SPACE, seed=0, population=8, sample_size=3)
    evaluator = SleepScore(sleep_s)
    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.perf_counter()
    print(json.dumps({"pid": os.getpid(), "ready": True}), flush=True)
    run_cooperative(strategy, evaluator, trials, store, progress=False, heartbeat_s=heartbeat)  # type: ignore[arg-type]
    print(json.dumps({"pid": os.getpid(), "evaluated": evaluator.calls, "seconds": time.perf_counter() - t0}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
