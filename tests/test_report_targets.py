"""A search on several targets: the front is taken on the score and the latency on every target, by
one function, so the summary of `nas search` and `nas report` show the same front; tables and plots
name each target (`latency_ms[pixel1]`), never a bare `latency_ms` that shows the first one only."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from nas.cli.main import main
from nas.pipeline.report import SearchRecord, label, latency_axes, load_search, pareto_front, plot
from nas.store.trial import COMPLETE, FAILED, Trial
from search_spaces.catalog import get_space

SPACE = get_space("mbconv")
ARCH = SPACE.sample(np.random.default_rng(0))
TARGETS = ("pixel1", "xeon-2.8ghz")


def trial(n: int, score: float, a: float, b: float, status: str = COMPLETE) -> Trial:
    return Trial(n, ARCH, {"score": score, "latency_ms": a, "latency_ms.pixel1": a, "latency_ms.xeon-2.8ghz": b},
                 status, None, 0.0, 0)


def brute_force_front(trials: list[Trial], xs: list[str]) -> list[int]:
    """Reference: trials no other beats (>= score, <= every latency, better on one); of equals, the first."""
    ok = [t for t in trials if t.ok]
    vec = {t.number: (-t.metrics["score"], *(t.metrics[m] for m in xs)) for t in ok}

    def beats(p: tuple[float, ...], q: tuple[float, ...]) -> bool:
        return all(a <= b for a, b in zip(p, q)) and p != q

    out = []
    for t in ok:
        v = vec[t.number]
        if not any(beats(vec[u.number], v) for u in ok) and not any(vec[u.number] == v for u in ok
                                                                     if u.number < t.number):
            out.append(t.number)
    return sorted(out)


def test_front_on_several_latencies() -> None:
    trials = [trial(0, 5.0, 10, 3), trial(1, 5.0, 12, 2),   # equal score: each faster on one target
              trial(2, 4.0, 11, 3.5),                        # beaten by 0 on both targets
              trial(3, 6.0, 13, 4), trial(4, 6.0, 13, 4),    # exact tie: the first is kept
              trial(5, 9.0, 1, 1, FAILED), trial(6, 3.0, 9, 5)]
    xs = latency_axes(trials, TARGETS)
    assert xs == ["latency_ms.pixel1", "latency_ms.xeon-2.8ghz"]
    assert sorted(t.number for t in pareto_front(trials, xs)) == [0, 1, 3, 6] == brute_force_front(trials, xs)
    assert [t.number for t in pareto_front(trials)] == [6, 0, 3]   # one target: the score vs latency_ms staircase
    assert latency_axes(trials, ("pixel1",)) == ["latency_ms"]
    assert [label(m, TARGETS) for m in ("latency_ms", "latency_ms.xeon-2.8ghz", "score")] == [
        "latency_ms[pixel1]", "latency_ms[xeon-2.8ghz]", "score"]
    fig = plot(trials, xs, bounds={"latency_ms.pixel1": 12.0, "latency_ms.xeon-2.8ghz": 4.0}, targets=TARGETS)
    assert [ax.get_xlabel() for ax in fig.axes] == ["latency_ms[pixel1]", "latency_ms[xeon-2.8ghz]"]
    assert [[line.get_xdata()[0] for line in ax.get_lines()] for ax in fig.axes] == [[12.0], [4.0]]   # the bounds


def test_two_target_search_summary_and_report_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "two"
    code = main(["search", "--space", "mbconv", "--target", "pixel1", "--target", "xeon-2.8ghz",
                 "--latency-ms", "80", "--latency-ms", "8", "--evaluator-option", "proxy=params",
                 "--strategy", "random", "--trials", "40", "--seed", "0", "--out", str(out), "--quiet"])
    summary = capsys.readouterr().out
    assert code == 0, summary
    head = re.search(r"Pareto front \(score up, (.+) down\): (\d+) of 40 finished trials", summary)
    assert head is not None, summary
    assert head.group(1) == "latency_ms[pixel1] and latency_ms[xeon-2.8ghz]"
    assert "latency_ms[pixel1]  latency_ms[xeon-2.8ghz]" in summary   # the table's columns

    assert main(["report", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    trials = load_search(out).trials
    xs = ["latency_ms.pixel1", "latency_ms.xeon-2.8ghz"]
    reference = brute_force_front(trials, xs)
    assert int(head.group(2)) == len(info["pareto"]) == len(reference) > 2
    assert sorted(p["number"] for p in info["pareto"]) == reference
    assert info["x_labels"] == ["latency_ms[pixel1]", "latency_ms[xeon-2.8ghz]"]
    assert all(p["latency_ms.xeon-2.8ghz"] <= 8.0 and p["latency_ms.pixel1"] <= 80.0 for p in info["pareto"])
    page = Path(info["html"]).read_text()
    assert "<th>latency_ms[pixel1]</th><th>latency_ms[xeon-2.8ghz]</th>" in page

    # one target chosen with --x: the front on it alone, labelled with its target
    assert main(["report", str(out), "--x", "latency_ms.xeon-2.8ghz", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["x_labels"] == ["latency_ms[xeon-2.8ghz]"]
    assert [p["number"] for p in one["pareto"]] == [t.number for t in sorted(
        pareto_front(trials, "latency_ms.xeon-2.8ghz"), key=lambda t: t.metrics["score"])]
    record = SearchRecord(trials, json.loads((out / "config.json").read_text()), "")
    assert record.targets() == list(TARGETS)
