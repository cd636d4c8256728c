"""The README's int8 validation rows, formatted from saved `nas latency validate --json` reports.

    python benchmarks/int8_validation_table.py mbconv.new.json mbconv.old.json ... [--write README.md]

Each report gives one markdown row: space, how the nets were timed (groups x rounds, statistic), the
load average when it started, the stored table with its stored correction against the nets (Spearman /
MAPE / share within 10%), the layers re-timed beside the nets (joint LUT), the nets against themselves
(two halves of the rounds: the noise ceiling) and the repeats' spread. --write replaces the block between
`<!-- int8 validation: begin -->` and `<!-- int8 validation: end -->` in that file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- int8 validation: begin -->", "<!-- int8 validation: end -->"


def cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    return f"{m['spearman']:.3f} / {m['mape_pct']:.1f}% / {m['within_10_pct']:.0f}%"


def row(r: dict[str, Any]) -> str:
    met = r["metrics"]
    timing = (f"{r['groups']} group{'s' if r['groups'] > 1 else ''} x {r['rounds']} rounds"
              + (", round medians" if r.get("statistic", "median") != "median" else ""))
    load = r.get("load") or {}
    stored = met.get("table_corrected") or met.get("table_lut")
    return (f"| {r['space']} | {timing} | {load.get('load1', float('nan')):.1f} | **{cell(stored)}** | "
            f"{cell(met.get('joint_lut'))} | {cell(r.get('repeatability'))} | {r['repeat_spread_pct']:.0f}% |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path, help="nas latency validate --json outputs")
    ap.add_argument("--write", type=Path, metavar="README.md", help="replace the marked block of this file")
    args = ap.parse_args(argv)
    lines = ["| space | nets timed in | load | table + stored correction | layers re-timed beside the nets "
             "(plain sum) | nets vs themselves | repeats spread |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [row(json.loads(p.read_text())) for p in args.reports]
    print("\n".join(lines))
    if args.write:
        text = args.write.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{args.write} has no {BEGIN} ... {END} block")
        head, rest = text.split(BEGIN, 1)
        args.write.write_text(head + BEGIN + "\n" + "\n".join(lines) + "\n" + END + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
