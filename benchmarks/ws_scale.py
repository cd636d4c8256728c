"""1 process against 2 (torchrun, gloo on CPU) for each weight-sharing strategy: CPU seconds, wall seconds and
the result (per-epoch training loss, the best trial's score, the derived arch).

    OMP_NUM_THREADS=1 python benchmarks/ws_scale.py [--only supernet,darts] [--ray] [--device cuda] [--nproc 2]

Each search is tiny (256 synthetic 32x32 images, or 16x16 for darts; 2 epochs of global batches of 32;
the supernet one is README's "Resuming and scaling" command with --seed 1 --torch-threads 1), so the whole
comparison takes a few CPU minutes. CPU seconds are the children's user+sys (getrusage), the figure to
compare on a shared machine; 2 processes do the same number of optimizer steps on half batches each, and
add the collectives. `--ray`: also `--runner ray --workers 2` (an embedded Ray; its CPU time is not
counted: Ray's worker processes are not children of this one). `--device cuda`: every search trains on the
GPU (torchrun: NCCL, each rank its GPU, so `--nproc` must not exceed the GPUs; benchmarks/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def searches(device: str = "cpu") -> dict[str, list[str]]:
    common = ["--dataset", "synthetic:256", "--epochs", "2", "--batch-size", "32", "--seed", "1",
              "--torch-threads", "1", "--quiet", "--json", "--device", device]
    mb = ["--space", "mbconv", "-o", "resolution=32", "-o", "width_mult=0.25", "--target", "pixel1"]
    return {
        "supernet": [*mb, "--strategy", "supernet", "--trials", "6", *common],
        "single-path": [*mb, "--strategy", "single-path", "--latency-ms", "5", *common],
        "darts": ["--space", "nasnet", "-o", "variant=darts", "-o", "channels=4", "-o", "cells=1", "-o",
                  "resolution=16", "--target", "pixel1", "--strategy", "darts", "--strategy-option", "channels=4",
                  "--strategy-option", "retrain_epochs=1", *common],
        "differentiable": [*mb, "--strategy", "differentiable", "--latency-ms", "5", *common],
    }


def run(args: list[str], launch: str, out: Path, nproc: int = 2) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    pre = {"1": [sys.executable, "-m", "nas.cli"], "ray": [sys.executable, "-m", "nas.cli"],
           "2": [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "nas.cli"]}
    extra = ["--runner", "ray", "--workers", "2"] if launch == "ray" else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([*pre[launch], "search", *args, *extra, "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=1800)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{launch}: rc {done.returncode}\n{done.stderr[-2000:]}")
    s = json.loads(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tr = s.get("training") or {}
    # Ray's processes are children of its raylet, not of ours: getrusage does not count them
    return {"cpu_s": None if launch == "ray" else round(cpu, 1), "wall_s": round(wall, 1), "score": s["metrics"].get("score"),
            "loss": [round(h.get("loss", h.get("ce", float("nan"))), 4) for h in tr.get("history", [])],
            "arch": s["arch"], "world": (tr.get("distributed") or {}).get("world_size", 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated strategies (default: all four)")
    ap.add_argument("--ray", action="store_true", help="also --runner ray --workers 2")
    ap.add_argument("--device", default="cpu", help="torch device of every search: cpu (default), cuda")
    ap.add_argument("--nproc", type=int, default=2, choices=range(1, 9), metavar="N",
                    help="torchrun processes (1-8, default 2; on CUDA at most the GPUs)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        todo = searches(a.device)
        names = a.only.split(",") if a.only else list(todo)
        for name in names:
            for launch in ("1", "2", *(["ray"] if a.ray else [])):
                r = run(todo[name], launch, tmp / f"{name}-{launch}", a.nproc)
                label = {"1": "1 process", "2": f"torchrun x{a.nproc}", "ray": "ray x2"}[launch]
                cpu = "   n/a" if r["cpu_s"] is None else f"{r['cpu_s']:>6.1f}"
                print(f"{name:<15} {label:<12} cpu {cpu} s  wall {r['wall_s']:>6.1f} s  "
                      f"loss/epoch {r['loss']}  best score {r['score']:.4f}  arch {r['arch']}", flush=True)


if __name__ == "__main__":
    main()
