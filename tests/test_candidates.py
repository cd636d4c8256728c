"""`nas search --candidates FILE`: a search that stays inside a given list of archs, on every space.

Reference values: the candidate files written here (the search may only ever evaluate their archs),
and the NATS size-space ground truth (`tabular` evaluator) for the accuracy of what it found.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from nas.core.errors import ArchError, UsageError
from search_spaces.catalog import SPACES, get_space


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    f = tmp_path / name
    f.write_text("\n".join(lines) + "\n")
    return f


@pytest.mark.parametrize("name", SPACES.names())
def test_every_space_keeps_to_its_candidate_list(name: str, tmp_path: Path) -> None:
    full = get_space(name)
    rng = np.random.default_rng(0)
    archs = list(dict.fromkeys(full.sample(rng) for _ in range(8)))[:5]
    f = _write(tmp_path, "c.txt", ["# five archs"] + [full.format(a) for a in archs])
    space = get_space(name, candidates=str(f))
    assert space.name == name and space.size() == len(archs) == 5
    assert space.options()["candidates"] == str(f)
    assert {space.sample(np.random.default_rng(s)) for s in range(60)} == set(archs)
    arch = archs[0]
    for _ in range(20):
        child = space.mutate(arch, rng)
        assert child in archs and child != arch
        arch = child
    outside = next(a for a in (full.sample(rng) for _ in range(100)) if a not in archs)
    with pytest.raises(ArchError, match=f"is not in the candidate list {f}"):
        space.validate(outside)
    # the nets are the space's own, and the space travels to Ray workers (pickle) as it is
    again = pickle.loads(pickle.dumps(space))
    assert again.options() == space.options() and again.size() == 5 and type(again) is type(space)
    assert [len(space.layers(a)) for a in archs] == [len(full.layers(a)) for a in archs]


def test_cli_search_evaluates_only_listed_archs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    from nas.evaluators.tabular import truth_table
    full = get_space("nats_sss")
    listed = ["8:8:8:8:8", "64:64:64:64:64", "32:32:32:32:32", "16:64:16:64:16", "64:8:64:8:64", "48:48:48:48:48"]
    f = _write(tmp_path, "list.txt", listed)
    out = tmp_path / "run"
    assert main(["search", "--space", "nats_sss", "--candidates", str(f), "--evaluator", "tabular",
                 "--strategy", "random", "--trials", "12", "--out", str(out), "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    truth = truth_table("nats_sss", "cifar10")
    assert summary["arch"] == max(listed, key=truth.__getitem__)   # the best of the list, by ground truth
    config = json.loads((out / "config.json").read_text())
    assert config["space_options"] == {"candidates": str(f.resolve())}
    from nas.pipeline.report import load_search
    record = load_search(str(out))
    seen = {full.format(t.arch) for t in record.trials}
    assert seen <= set(listed) and len(seen) >= 4


def test_candidate_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    bad = _write(tmp_path, "bad.txt", ["# header", "8:8:8:8:8", "8:8:8:8:9", "16:16:16:16:16"])
    twice = _write(tmp_path, "twice.txt", ["8:8:8:8:8", "16:16:16:16:16", "8:8:8:8:8"])
    good = _write(tmp_path, "good.txt", ["8:8:8:8:8", "16:16:16:16:16"])
    cases = [
        (["--candidates", str(bad)], f"candidate file {bad}, line 3: "),
        (["--candidates", str(twice)], f"candidate file {twice}, line 3: arch '8:8:8:8:8' is listed twice"),
        (["--candidates", str(tmp_path / "none.txt")], "--candidates .*none.txt: no such file"),
        (["--candidates", str(good), "-o", f"candidates={good}"], "give the candidate list once"),
        (["--candidates", str(good), "--strategy", "exact"], "strategy 'exact' cannot search space 'nats_sss'"),
    ]
    for extra, message in cases:
        out = tmp_path / "never"
        code = main(["search", "--space", "nats_sss", "--evaluator", "tabular", "--trials", "3", "--out", str(out),
                     "--quiet", *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, (extra, err)
        assert __import__("re").search(message, err), (message, err)
        assert not out.exists()
    with pytest.raises(UsageError, match="candidate list .*empty"):
        get_space("mbconv", candidates=str(_write(tmp_path, "empty.txt", ["# nothing"])))
    # a strategy that derives its arch instead of sampling cannot keep to a list (exact, on a space it solves)
    mb = get_space("mbconv")
    rng = np.random.default_rng(0)
    listed = _write(tmp_path, "mb.txt", [mb.format(mb.sample(rng)) for _ in range(3)])
    out = tmp_path / "never"
    assert main(["search", "--space", "mbconv", "--target", "xeon-2.8ghz", "--latency-ms", "8", "--evaluator-option",
                 "proxy=flops", "--strategy", "exact", "--candidates", str(listed), "--out", str(out)]) == 2
    assert "strategy 'exact' does not search by sampling" in capsys.readouterr().err and not out.exists()


def test_nb201_candidate_flag_uses_its_own_list(tmp_path: Path) -> None:
    """nb201 has a native `candidates` option (also 'naslib'); the flag feeds it the same file."""
    from nas.cli.main import main
    from search_spaces.bench_data import nb201_records
    blocks = sorted(nb201_records("cifar10"))[:7]
    f = _write(tmp_path, "nb.txt", blocks)
    out = tmp_path / "nb"
    assert main(["search", "--space", "nb201", "--candidates", str(f), "--evaluator", "tabular", "--target",
                 "pixel3", "--strategy", "evolution", "--trials", "10", "--out", str(out), "--quiet"]) == 0
    best = json.loads((out / "best.json").read_text())
    truth = nb201_records("cifar10")
    assert best["arch"] == max(blocks, key=lambda b: truth[b].val_accuracy)
