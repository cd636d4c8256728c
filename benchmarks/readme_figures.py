"""The README's strategy tables (`nas bench strategies`), regenerated from the current code in one go.

    python benchmarks/readme_figures.py [--strategies evolution,bo] [--seeds 20] [--budgets 50,100,300]
                                        [--from-json A.json,B.json] [--write README.md]

Runs `nas.bench.strategies.strategy_benchmark` on every problem of `nas.bench.strategies.SETUPS`
(or formats saved `nas bench strategies --out` results with --from-json, merging the runs of one problem:
`merge`) and prints the markdown block
that sits between `<!-- strategies: begin -->` and `<!-- strategies: end -->` in README.md; --write
replaces that block in place (the tables of problems not in --from-json are kept as they are). Each table starts with a `problem:` line (space, target, bound, seeds,
budgets, feasible archs, optimum) that tests/test_readme_tables.py checks against the code, so a table
whose problem no longer matches (a refit moving the bound, a changed default) fails the test suite.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's nas
BEGIN, END = "<!-- strategies: begin -->", "<!-- strategies: end -->"


def problem_line(r: dict[str, Any]) -> str:
    ref = r["reference"]
    return (f"problem: space={r['space']} target={r['target']} latency_ms={r['latency_ms']:g} seeds={r['seeds']} "
            f"first_seed={r['first_seed']} budgets={','.join(map(str, r['budgets']))} "
            f"feasible={ref['feasible']}/{ref['archs']} optimum={ref['best_feasible_accuracy']:.2f}")


def _p(p: float) -> str:
    return "-" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}"


def merge(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One result per problem: runs of the same problem (space, target, bound, seeds) made separately (e.g.
    one `nas bench strategies` per strategy, or a longer budget run later) are merged, the first file's
    entries winning; random search must agree wherever two runs share a budget (same seeds, same code),
    and Holm's correction is recomputed over all the merged comparisons (strategies x budgets)."""
    from nas.bench.strategies import holm
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in results:
        key = (r["space"], r["target"], r["latency_ms"], r["seeds"], r.get("first_seed", 0))
        if key not in merged:
            merged[key] = json.loads(json.dumps(r))
            continue
        base = merged[key]
        for name, row in r["strategies"].items():
            mine = base["strategies"].setdefault(name, {**row, "budgets": {}})
            for b, e in row["budgets"].items():
                if name == "random" and b in mine["budgets"]:
                    got, want = e["best_accuracy"]["mean"], mine["budgets"][b]["best_accuracy"]["mean"]
                    if abs(got - want) > 1e-9:
                        raise SystemExit(f"{r['space']}: random search differs between the merged runs at {b} "
                                         f"evaluations ({got} vs {want}): not the same problem or code")
                mine["budgets"].setdefault(b, e)
        base["budgets"] = sorted({int(b) for b in base["budgets"]} | {int(b) for b in r["budgets"]})
    for r in merged.values():
        keys = [(n, b) for n, row in r["strategies"].items() if n != "random" for b in row["budgets"]]
        for (n, b), p in zip(keys, holm([r["strategies"][n]["budgets"][b]["p_value"] for n, b in keys])):
            e = r["strategies"][n]["budgets"][b]
            e["p_holm"] = p
            e["beats_random"] = bool(e[r["strategies"][n]["score"]]["mean"] > e["random"]["mean"] and p < 0.05)
    return list(merged.values())


def table(r: dict[str, Any]) -> str:
    budgets = [str(b) for b in r["budgets"]]
    head = f"| {r['space']} ({r['target']} <= {r['latency_ms']:g} ms): mean regret (best acc %) | " + \
        " | ".join(f"{b} evals" for b in budgets) + " |"
    lines = [f"<!-- {problem_line(r)} -->", head, "|---" * (len(budgets) + 1) + "|"]
    for name, row in r["strategies"].items():
        if row["score"] != "best_accuracy":
            continue
        cells = []
        for b in budgets:
            e = row["budgets"].get(b)
            if e is None:
                cells.append("-")
                continue
            text = f"{e['regret']['mean']:.3f} ({e['best_accuracy']['mean']:.2f})"
            if name != "random":
                text += f", p {_p(e['p_value'])}, Holm {_p(e['p_holm'])}" + (" **<= half**" if e["half_random_regret"]
                                                                             else "")
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def kept_tables(old_block: str, spaces: set[str]) -> list[str]:
    """The tables of the current block whose problem was not regenerated (--from-json with some problems)."""
    chunks = old_block.split("<!-- problem: ")[1:]
    return ["<!-- problem: " + c.strip() for c in chunks if c.split()[0].split("=", 1)[1] not in spaces]


def block(results: list[dict[str, Any]], kept: list[str] | None = None) -> str:
    intro = ("Regret = exact optimum under the bound minus the best feasible ground-truth accuracy found; "
             "p: two-sided Wilcoxon signed-rank vs random over the shared seeds, Holm: corrected over the "
             "strategies x budgets of the problem; **<= half**: mean regret at most half of random's; -: not "
             "run at that budget. Generated by `python benchmarks/readme_figures.py`.")
    return "\n".join([BEGIN, intro, ""] + [table(r) + "\n" for r in results] + [k + "\n" for k in kept or []] + [END])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategies", default="evolution,bo")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budgets", default="50,100,300")
    ap.add_argument("--from-json", help="comma-separated result files of `nas bench strategies --out` to format")
    ap.add_argument("--write", help="replace the generated block of this README")
    args = ap.parse_args(argv)
    if args.from_json:
        results = merge([json.loads(Path(p).read_text()) for p in args.from_json.split(",")])
    else:
        from nas.bench.strategies import SETUPS, strategy_benchmark
        results = [strategy_benchmark(space, strategies=args.strategies.split(","), seeds=args.seeds,
                                      budgets=[int(b) for b in args.budgets.split(",")], progress=False)
                   for space in SETUPS]
    text = block(results)
    if args.write:
        path = Path(args.write)
        readme = path.read_text()
        if BEGIN not in readme or END not in readme:
            raise SystemExit(f"{path}: no {BEGIN} ... {END} block to replace")
        head, rest = readme.split(BEGIN, 1)
        text = block(results, kept_tables(rest.split(END, 1)[0], {r["space"] for r in results}))
        path.write_text(head + text + rest.split(END, 1)[1])
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
