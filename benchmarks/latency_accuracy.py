"""How well do LUTs predict whole-net latency? Plain LUT vs learned correction on held-out archs.

For every registered space (or --space), take an onnxruntime table of it (a shipped target whose
options match, else one profiled on the fly into a temporary file), sample archs, time them end to
end interleaved with their layers (`latency.validate`, joint mode), fit the correction on a part
and report Spearman, Kendall, MAPE and the share within +-10% on the held-out rest.

    python benchmarks/latency_accuracy.py                       # >= 50 held-out archs per space
    python benchmarks/latency_accuracy.py --space mbconv --held-out 10   # a quick check

Needs a quiet machine for wall-clock figures: other processes competing for the cores slow long
runs (whole nets) more than short ones (layers), which shows up as LUT bias; `--clock cpu` (this
thread's CPU time, one intra-op thread) is immune to that. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from latency.profile import ProfileSettings, device_metadata, profile_layers
from latency.table import LatencyTable
from latency.targets import load_table, target_names, target_spaces
from latency.validate import sample_archs, validate
from nas.cli.args import space_options
from nas.core.errors import LatencyError
from search_spaces.catalog import SPACES, get_space

log = logging.getLogger("latency_accuracy")


def find_table(space: Any) -> LatencyTable | None:
    """A shipped onnxruntime table of `space` with the same options, if any."""
    for t in target_names():
        if space.name in target_spaces(t):
            table = load_table(t, space.name)
            if table.metadata.get("runtime") != "onnxruntime":
                continue
            try:
                table.check_space(space.name, space.options())
            except LatencyError:
                continue
            return table
    return None


def run_space(space: Any, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    samples = math.ceil(args.held_out / args.holdout)
    table = find_table(space)
    if table is None:
        # No shipped table: profile one now. Only the sampled archs' layers where the space is not
        # separable (its LUT model needs no full matrix), which saves most of the time on big spaces.
        settings = ProfileSettings(warmup=args.warmup, repeats=args.repeats)
        specs = space.all_layers() if space.separable_layers() is not None else list(
            {s.key: s for a in sample_archs(space, samples, args.seed) for s in space.layers(a)}.values())
        log.info("%s: no shipped onnxruntime table with these options; profiling %d layers now", space.name, len(specs))
        table = profile_layers(specs, settings, LatencyTable(space.name, space.options(), device_metadata(settings)),
                               tmp / f"{space.name}.json", progress=not args.quiet)
    t0 = time.perf_counter()
    res = validate(space, table, samples=samples, seed=args.seed, joint=True, rounds=args.rounds, chunk=args.chunk,
                   fit=True, holdout=args.holdout, progress=not args.quiet, clock=args.clock)
    r = res.report
    h = r["holdout"]
    return {"space": space.name, "options": space.options(), "table": table.source, "clock": args.clock,
            "samples": r["samples"],
            "n_fit": h["n_fit"], "n_test": h["n_test"], "seconds": round(time.perf_counter() - t0, 1),
            "lut": h["joint_lut"], "corrected": h["joint_corrected"], "table_lut": h["table_lut"],
            "correction_selected": h["selected"], "correction_all": res.correction.fit if res.correction else None,
            "all_archs": r["metrics"], "warnings": r["warnings"], "archs": r["archs"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", action="append", help="space to check, repeatable (default: every registered one)")
    ap.add_argument("-o", "--space-option", action="append", metavar="KEY=VALUE", help="options for every --space")
    ap.add_argument("--held-out", type=int, default=50, help="held-out archs per space (default 50)")
    ap.add_argument("--holdout", type=float, default=0.5, help="share of sampled archs held out from the fit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: this thread's CPU time (threads=1), robust to other busy processes")
    ap.add_argument("--warmup", type=int, default=10, help="for tables profiled on the fly")
    ap.add_argument("--repeats", type=int, default=50, help="for tables profiled on the fly")
    ap.add_argument("--json", help="write all figures (and per-arch rows) to this file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    opts = space_options(args.space_option)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.space or SPACES.names():
            results.append(run_space(get_space(name, **opts), args, Path(tmp)))
    print(f"{'space':<12}{'model':<16}{'n_test':>7}{'spearman':>10}{'kendall':>9}{'mape_%':>8}{'<=10%':>8}"
          f"{'bias_%':>8}   (held-out archs; the LUT uses layer times from the same interleaved run)")
    for r in results:
        for label, key in (("LUT", "lut"), ("LUT+correction", "corrected"), ("table LUT", "table_lut")):
            m = r[key]
            print(f"{r['space']:<12}{label:<16}{m['n']:>7}{m['spearman']:>10.3f}{m['kendall']:>9.3f}"
                  f"{m['mape_pct']:>8.2f}{m['within_10_pct']:>7.0f}%{m['bias_pct']:>8.2f}")
        print(f"{'':<12}({r['samples']} archs, fit on {r['n_fit']} (kept: {r['correction_selected']}), "
              f"{r['clock']} clock, {r['seconds']} s; "
              f"table {r['table']})")
        for w in r["warnings"]:
            print(f"{'':<12}warning: {w}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
