"""Shared studies: per-trial store overhead (SQLite, journal, PostgreSQL), cooperating searches vs one on an
evaluation-bound load, and the time to recover a killed search's trial.

    python benchmarks/shared_study.py --postgres postgresql://USER:PW@127.0.0.1:PORT/DB [--trials 40] [--seconds 0.2]

Overhead: a random search with an instant evaluator, per trial, minus the same search on a memory store
(plain loop: start + append; shared loop: claim, which re-reads the study, + append + study reads).
Cooperation: N processes (tests/coop_worker.py; evaluation = sleeping --seconds, so the numbers measure
coordination, not CPU sharing on a small machine) on one study; evaluations/s = trials / the slowest
process's wall time; duplicates = visible trials minus distinct archs; over = visible trials - target.
Recovery: a process claims a trial and is SIGKILLed; a second one is already running; seconds from the
kill to the retry's start, for a dead pid on this host and for an owner on "another host" (heartbeat 1 s).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.pipeline.cooperative import open_any_store, run_cooperative  # noqa: E402
from nas.pipeline.runner import run_search  # noqa: E402
from nas.store.study import open_store  # noqa: E402
from nas.store.storage import make_storage
from nas.strategies.catalog import STRATEGIES  # noqa: E402
from nas.store.trial import MemoryStore  # noqa: E402
from tests.coop_worker import SPACE, SleepScore  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def overhead(spec: str | None, n: int, shared: bool) -> float:
    """Seconds per trial of a random search with an instant evaluator."""
    strategy = STRATEGIES.get("random")(SPACE, seed=0)
    name = f"b-{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    if spec is None:
        run_search(strategy, SleepScore(0.0), n, MemoryStore(), progress=False)
    elif shared:
        run_cooperative(strategy, SleepScore(0.0), n, open_any_store(spec, name, space=SPACE), progress=False)
    else:
        run_search(strategy, SleepScore(0.0), n, open_store(spec, name, space=SPACE), progress=False)
    return (time.perf_counter() - t0) / n


def trials_of(spec: str, study: str) -> list[Any]:
    storage = make_storage(spec)
    return storage.get_all_trials(storage.get_study_id_from_name(study), deepcopy=False)


def cooperate(spec: str, workers: int, trials: int, seconds: float) -> dict[str, Any]:
    study = f"c-{uuid.uuid4().hex[:8]}"
    start_at = time.time() + 8
    procs = [subprocess.Popen([sys.executable, "-m", "tests.coop_worker", spec, study, str(trials), str(seconds),
                               str(start_at), "1.0"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = max(r["seconds"] for r in reports)
    every = trials_of(spec, study)
    vis = [t for t in every if not t.user_attrs.get("interrupted")]
    return {"workers": workers, "evals_per_s": round(trials / wall, 2), "wall_s": round(wall, 2),
            "evaluated": [r["evaluated"] for r in reports], "duplicates": len(vis) - len({t.system_attrs["nas_key"]
                                                                                       for t in vis}),
            "over_target": len(vis) - trials, "withdrawn_claims": len(every) - len(vis)}


def recovery(spec: str, other_host: bool) -> float:
    study = f"r-{uuid.uuid4().hex[:8]}"
    extra = ["1.0", "elsewhere:1"] if other_host else ["1.0"]
    slow = subprocess.Popen([sys.executable, "-m", "tests.coop_worker", spec, study, "6", "60", str(time.time()),
                             *extra], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    fast = None
    try:
        while True:
            try:
                running = [t for t in trials_of(spec, study) if t.state.name == "RUNNING"]
            except KeyError:
                running = []
            if running:
                break
            time.sleep(0.05)
        # the second search is up and waiting (the first holds the only free claim: target 1 more than done)
        fast = subprocess.Popen([sys.executable, "-m", "tests.coop_worker", spec, study, "1", "0.01",
                                 str(time.time()), "1.0"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
        assert fast.stdout is not None and "ready" in fast.stdout.readline()
        time.sleep(1.0)
        slow.send_signal(signal.SIGKILL)
        killed = time.time()
        slow.wait()
        fast.communicate(timeout=300)
        retry = [t for t in trials_of(spec, study) if t.user_attrs.get("attempt") == 1]
        return retry[0].datetime_start.timestamp() - killed
    finally:
        for p in (slow, fast):
            if p is not None and p.poll() is None:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", required=True)
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=0.2)
    ap.add_argument("--overhead-trials", type=int, default=50)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    n = args.overhead_trials
    base = overhead(None, n, False)
    rows = {"sqlite (plain loop)": overhead(f"sqlite:///{tmp / 'o.db'}", n, False),
            "journal (plain loop)": overhead(f"journal:{tmp / 'o.log'}", n, False),
            "postgresql (plain loop)": overhead(args.postgres, n, False),
            "journal (shared: claims)": overhead(f"journal:{tmp / 's.log'}", n, True),
            "postgresql (shared: claims)": overhead(args.postgres, n, True)}
    print(f"store overhead per trial ({n} trials, memory-store loop {base * 1e3:.2f} ms subtracted):")
    for name, sec in rows.items():
        print(f"  {name:<28} {(sec - base) * 1e3:7.1f} ms")
    for spec, label in ((args.postgres, "postgresql"), (f"journal:{tmp / 'coop.log'}", "journal")):
        print(f"cooperating searches on {label}, {args.trials} trials of {args.seconds} s:")
        for w in (1, 2, 4):
            print("  " + json.dumps(cooperate(spec, w, args.trials, args.seconds)))
    print("killed search's trial retried after (s): same host %.2f, other host (heartbeat 1 s, grace 8 s) %.2f"
          % (recovery(args.postgres, False), recovery(args.postgres, True)))


if __name__ == "__main__":
    main()
