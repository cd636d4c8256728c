"""Wall time of the same search through the CLI and through the Python API, interleaved.

    python benchmarks/api_vs_cli.py [--trials 50] [--rounds 3]

Each round runs `nas search ...` and `python -c "from nas import search; ..."` as fresh processes,
one after the other (so machine drift hits both alike), and prints the per-round times and the
median ratio API / CLI. Before the API fixed torch's threads it ran 7x slower than the CLI.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    nas_bin = shutil.which("nas") or sys.exit("the nas command is not on PATH (pip install -e .)")
    ratios = []
    for r in range(args.rounds):
        cli = timed([nas_bin, "search", "--space", "mbconv", "--target", "pixel1", "--latency-ms", "80",
                     "--trials", str(args.trials), "--quiet", "--out", str(tmp / f"cli{r}")])
        api = timed([sys.executable, "-c",
                     "from nas import SearchConfig, search\n"
                     f"search(SearchConfig(space='mbconv', targets=('pixel1',), latency_ms=(80.0,), "
                     f"trials={args.trials}, out={str(tmp / f'api{r}')!r}), progress=False)"])
        ratios.append(api / cli)
        print(f"round {r}: CLI {cli:.1f} s, API {api:.1f} s, API/CLI {api / cli:.2f}")
    print(f"median API/CLI over {args.rounds} rounds: {statistics.median(ratios):.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
