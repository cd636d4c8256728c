"""The README's generated strategy tables describe the problems the code benchmarks today.

benchmarks/readme_figures.py writes a `problem:` line above each table; this test fails when the code's
problem (space, target, bound, feasible archs, optimum) or the table's seeds and budgets no longer match,
e.g. after a latency refit moves the bound's feasible set. Regenerate with the script's --write.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from nas.bench.strategies import SETUPS, reference, setup_for

README = Path(__file__).resolve().parents[1] / "README.md"
LINE = re.compile(r"<!-- problem: (.*?) -->")


def _problems() -> list[dict[str, str]]:
    text = README.read_text()
    block = text.split("<!-- strategies: begin -->", 1)[1].split("<!-- strategies: end -->", 1)[0]
    return [dict(kv.split("=", 1) for kv in m.group(1).split()) for m in LINE.finditer(block)]


def test_readme_has_a_table_per_benchmark_problem() -> None:
    assert sorted(p["space"] for p in _problems()) == sorted(SETUPS)


@pytest.mark.parametrize("problem", _problems(), ids=lambda p: p["space"])
def test_readme_table_matches_the_code(problem: dict[str, str]) -> None:
    setup = setup_for(problem["space"])
    assert (problem["target"], float(problem["latency_ms"])) == (setup.target, setup.latency_ms)
    assert int(problem["seeds"]) >= 20 and problem["first_seed"] == "0"   # reported seeds: 0-19, tuned on others
    assert {50, 100} <= {int(b) for b in problem["budgets"].split(",")}
    ref = reference(setup)
    assert problem["feasible"] == f"{ref['feasible']}/{ref['archs']}"
    assert problem["optimum"] == f"{ref['best_feasible_accuracy']:.2f}"
