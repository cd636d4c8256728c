"""The space x strategy-family table: wall time and found latency of each pair's tiny search.

    python benchmarks/matrix.py [--dataset digits] [--trials 3] [--bound 0.8] [--out /tmp/matrix] [--json]

Each pair runs `run_pair` of tests/test_matrix.py (the same tiny space options, strategy options and
pixel1-model table per space) on `--dataset`; `--bound F` bounds the latency at F x the median of 20
seeded samples (omit for unbounded). A pair no strategy of its family supports prints the
one-line UsageError the search gives. Nothing is downloaded (digits is embedded).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _matrix_module() -> Any:
    spec = importlib.util.spec_from_file_location("test_matrix", ROOT / "tests" / "test_matrix.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--bound", type=float, default=None, help="latency bound as a factor of the median sample")
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="comma-separated space cases (default: all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT))
    from nas.core.errors import NasError
    from nas.training.threads import set_torch_threads
    set_torch_threads(None)
    m = _matrix_module()
    out = Path(args.out or tempfile.mkdtemp(prefix="matrix-"))
    cases = args.only.split(",") if args.only else list(m.SPACE_CASES)
    rows = []
    for case in cases:
        for family in m.FAMILIES:
            row: dict[str, Any] = {"space": case, "family": family}
            try:
                s = m.run_pair(case, family, out / f"{case}-{family}", dataset=args.dataset, trials=args.trials,
                               bound_factor=args.bound)
                row.update(strategy=s["strategy"], seconds=round(s["seconds_wall"], 1),
                           latency_ms=round(s["latency_ms"], 2), bound_ms=[round(b, 2) for b in s["bounds"]],
                           score=s["metrics"].get("score"), score_is=s.get("score_is"), arch=s["arch"])
            except NasError as exc:
                row.update(error=str(exc))
            rows.append(row)
            print(json.dumps(row) if args.json else _line(row), flush=True)
    return 0


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['space']:<13} {r['family']:<15} unsupported: {r['error']}"
    bound = f" (bound {r['bound_ms'][0]:.2f})" if r["bound_ms"] else ""
    return (f"{r['space']:<13} {r['family']:<15} {r['strategy']:<12} {r['seconds']:>7.1f} s  "
            f"{r['latency_ms']:>9.2f} ms{bound}  score {r['score']:.4g} ({r['score_is']})")


if __name__ == "__main__":
    raise SystemExit(main())
