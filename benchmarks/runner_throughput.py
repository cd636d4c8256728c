"""Runner throughput: local vs Ray (1 and 2 workers) on an evaluation-bound workload, Ray start-up,
store write overhead per trial (SQLite / journal vs memory), and the time to resume a stored search.

    python benchmarks/runner_throughput.py [--trials 30] [--seconds 0.2] [--workload spin|zero-cost]

`spin` is a single-threaded numpy loop calibrated to --seconds per evaluation; `zero-cost` is the
real NASWOT evaluator on the full-size mbconv space (about 0.3 s on one core). Run it on a quiet
machine: the Ray numbers need the cores to themselves.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.pipeline.runner import run_search
from nas.store.study import open_store
from nas.strategies.catalog import STRATEGIES
from nas.store.trial import MemoryStore
from search_spaces.catalog import get_space


class Spin:
    """A CPU-bound evaluation of a fixed cost (element-wise numpy: one thread)."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def __call__(self, arch: Any) -> dict[str, float]:
        x = np.linspace(0.0, 1.0, 20_000)
        for _ in range(self.rounds):
            x = np.sin(x) + 0.5
        return {"score": float(x.sum()) + len(arch.genes), "latency_ms": float(sum(g == "skip" for g in arch.genes))}


def calibrate(seconds: float) -> Spin:
    probe = Spin(200)
    arch = get_space("mbconv").sample(np.random.default_rng(0))
    probe(arch)
    t = time.perf_counter()
    probe(arch)
    per_round = (time.perf_counter() - t) / 200
    return Spin(max(1, int(seconds / per_round)))


def make_workload(name: str, seconds: float) -> tuple[Any, Any]:
    space = get_space("mbconv")
    if name == "spin":
        return space, calibrate(seconds)
    from nas.evaluators.catalog import make_evaluator
    return space, make_evaluator("zero-cost", space)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_local(space: Any, ev: Any, n: int) -> float:
    run_search(STRATEGIES.get("random")(space, seed=0), ev, 1, progress=False)   # warm-up (imports, caches)
    dt, _ = timed(lambda: run_search(STRATEGIES.get("random")(space, seed=1), ev, n, progress=False))
    return n / dt


def run_ray(space: Any, ev: Any, n: int, workers: int) -> tuple[float, float]:
    import ray

    from nas.pipeline.ray_runner import RayExecutor
    with RayExecutor(ev, workers=workers) as ex:
        startup = ex.startup_seconds
        # warm-up: every worker process imports nas and unpickles the evaluator once
        run_search(STRATEGIES.get("random")(space, seed=0), ev, workers, progress=False, executor=ex)
        dt, _ = timed(lambda: run_search(STRATEGIES.get("random")(space, seed=1), ev, n, progress=False,
                                         executor=ex))
    assert not ray.is_initialized()
    return n / dt, startup


def store_overhead(space: Any, n: int, folder: Path) -> dict[str, float]:
    """Seconds per trial spent in the store (start + append), on a trivial evaluator."""
    def trivial(arch: Any) -> dict[str, float]:
        return {"score": 1.0, "latency_ms": 1.0}

    out = {}
    t_mem, _ = timed(lambda: run_search(STRATEGIES.get("random")(space, seed=0), trivial, n, MemoryStore(),
                                        progress=False))
    out["memory"] = t_mem / n
    for name, spec in (("sqlite", f"sqlite:///{folder / 'o.db'}"), ("journal", f"journal:{folder / 'o.log'}"),
                       ("sqlite, no params", None)):
        if spec is None:
            store = open_store(f"sqlite:///{folder / 'np.db'}", "s", space=space, params=False)
        else:
            store = open_store(spec, "s", space=space)
        dt, _ = timed(lambda s=store: run_search(STRATEGIES.get("random")(space, seed=0), trivial, n, s,
                                                 progress=False))
        out[name] = dt / n
    return out


def resume_time(space: Any, n: int, folder: Path) -> tuple[float, float]:
    """Seconds to reopen a SQLite study of `n` trials, read them and rebuild evolution."""
    url = f"sqlite:///{folder / 'r.db'}"

    def trivial(arch: Any) -> dict[str, float]:
        return {"score": float(len(set(arch.genes)))}

    run_search(STRATEGIES.get("evolution")(space, seed=0), trivial, n, open_store(url, "s", space=space),
               progress=False)

    def resume() -> None:
        store = open_store(url, "s", space=space)
        strategy = STRATEGIES.get("evolution")(space, seed=0)
        strategy.rebuild(store.trials())
        store.recover()  # type: ignore[union-attr]
    dt, _ = timed(resume)
    return dt, dt / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30, help="timed evaluations per runner")
    ap.add_argument("--seconds", type=float, default=0.2, help="cost of one spin evaluation")
    ap.add_argument("--workload", choices=["spin", "zero-cost"], default="spin")
    ap.add_argument("--store-trials", type=int, default=100, help="trials for the store overhead")
    ap.add_argument("--resume-trials", type=int, default=500, help="trials in the resumed study")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    torch.set_num_threads(1)   # one evaluation = one core, in every runner
    space, ev = make_workload(args.workload, args.seconds)
    print(f"workload={args.workload} trials={args.trials} cpus={os.cpu_count()}")

    local = run_local(space, ev, args.trials)
    rows = [("local", local, None)]
    if not args.no_ray:
        try:
            for w in (1, 2):
                rate, startup = run_ray(space, ev, args.trials, w)
                rows.append((f"ray x{w}", rate, startup))
        except ImportError:
            print("ray not installed: pip install 'ray[default]'")
    print(f"\n{'runner':<10} {'evals/s':>9} {'vs local':>9} {'ray start s':>12}")
    for name, rate, startup in rows:
        print(f"{name:<10} {rate:>9.2f} {rate / local:>8.2f}x {'' if startup is None else f'{startup:12.2f}'}")

    with tempfile.TemporaryDirectory() as tmp:
        over = store_overhead(space, args.store_trials, Path(tmp))
        print(f"\nstore, per trial ({args.store_trials} trials, trivial evaluator; includes ask/tell)")
        for name, sec in over.items():
            extra = "" if name == "memory" else f"  (+{(sec - over['memory']) * 1e3:.1f} ms over memory)"
            print(f"  {name:<18} {sec * 1e3:8.2f} ms{extra}")
        total, per = resume_time(space, args.resume_trials, Path(tmp))
        print(f"\nresume a SQLite study of {args.resume_trials} trials (open + read + rebuild evolution): "
              f"{total:.2f} s ({per * 1e3:.2f} ms per trial)")


if __name__ == "__main__":
    main()
