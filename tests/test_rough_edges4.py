"""Issue 29, last cases: a foreign trials.db in --out, an ONNX model whose external data file is missing,
and the README's commands (the table of what runs smaller, instead or not at all must name README lines)."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from nas.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.quick
def test_foreign_trials_db_in_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trials.db holding only another search's study (copied into --out) was used: this search's study
    was added beside it. Now exit 2, one line naming the file and its study; the file is unchanged."""
    import optuna

    from nas.store.storage import sqlite_study_names
    out = tmp_path / "b"
    out.mkdir()
    db = out / "trials.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=f"sqlite:///{db}", study_name="a")
    before = db.read_bytes()
    code, _, err = nas(capsys, "search", "--space", "nb201", "-o", "candidates=naslib", "--evaluator", "tabular",
                       "--target", "pixel3", "--trials", "2", "--out", str(out), "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{db} holds another search's study ('a'), not this search's ('b')" in err and "--study a" in err
    assert sqlite_study_names(db) == ["a"] and db.read_bytes() == before
    assert not (out / "best.json").exists() and not (out / "config.json").exists()


def _external_data_model(folder: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["input", "w"], ["out"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 16, 16])], [w])
    path = folder / "ext.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
              save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    return path


@pytest.mark.quick
def test_missing_onnx_external_data_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It said "not an ONNX model (ValidationError)". Present: costed; missing or short: exit 2 naming it."""
    path = _external_data_model(tmp_path)
    data = tmp_path / "ext.onnx.data"
    code, out, err = nas(capsys, "latency", "predict", "--target", "pixel1", "--onnx", str(path))
    assert code == 0 and "pixel1:" in out, err
    full = data.read_bytes()
    data.write_bytes(full[:100])
    code, _, err = nas(capsys, "latency", "predict", "--target", "pixel1", "--onnx", str(path))
    assert code == 2 and f"holds 100 bytes, the model reads up to byte {len(full)}" in err, err
    data.unlink()
    for target in ("pixel1", "cpu"):
        code, _, err = nas(capsys, "latency", "predict", "--target", target, "--onnx", str(path))
        assert code == 2 and err.count("\n") == 1, err
        assert "keeps its weights in the external data file 'ext.onnx.data', which is missing" in err, err


def _ci_module(name: str) -> object:
    """A script of .ci/ as a module (.ci is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / ".ci" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _readme_commands() -> object:
    return _ci_module("readme_commands")


@pytest.mark.quick
def test_readme_command_tables_name_readme_lines() -> None:
    """Every entry of .ci/readme_commands.py's tables is a README command (a README edit under an entry fails
    here, not silently in CI), every README bash line has a step, and a smaller command differs from the
    README's only in the flags its entry names."""
    rc = _readme_commands()
    steps = rc.plan()   # raises on a table entry the README no longer has
    readme = rc.readme_commands((ROOT / "README.md").read_text())
    assert [(s.line, s.readme) for s in steps if s.how != "before"] == readme
    assert len(readme) > 60 and sum(s.how == "verbatim" for s in steps) > 25
    for s in steps:
        if s.how == "smaller":   # the same tokens once the named flags (and the added ones) are taken out
            small = rc.SMALLER[s.readme]
            flags = set(small.set) | set(small.drop)
            run = shlex.split(s.run.partition(" && ")[0])
            run = run[:len(run) - len(small.add)]
            readme = shlex.split(re.sub(r"\s+\[--[^\]]*\]", "", s.readme).partition(" && ")[0])
            assert _without(run, flags) == _without(readme, flags), s
            assert s.run.partition(" && ")[2] == s.readme.partition(" && ")[2]
    with pytest.raises(ValueError, match="no longer has"):
        rc.plan((ROOT / "README.md").read_text().replace("--trials 100 --seed 0 --out runs/p1", "--trials 99 --out runs/p1"))


def _without(tokens: list[str], flags: set[str]) -> list[str]:
    out, skip = [], False
    for i, t in enumerate(tokens):
        if skip:
            skip = False
        elif t in flags:
            skip = i + 1 < len(tokens) and not tokens[i + 1].startswith("-")
        else:
            out.append(t)
    return out


def test_readme_smaller_changes_only_the_named_flags() -> None:
    rc = _readme_commands()
    small = rc.Small("why", set={"--trials": "3", "--epochs": "1"}, drop=("--amp",), add=("-o", "x=1"))
    got = rc.smaller("nas search --space mbconv --trials 50 --amp --constraint 'a[b]<=3' --out r && nas report r", small)
    assert got == "nas search --space mbconv --trials 3 --constraint 'a[b]<=3' --out r --epochs 1 -o x=1 && nas report r"
    assert rc.strip_comment("nas list   # all") == "nas list" and rc.strip_comment("echo '#x' a") == "echo '#x' a"
    assert shutil.which("bash")


def _readme_lanes() -> object:
    return _ci_module("readme_lanes")


@pytest.mark.quick
def test_readme_lanes_keep_dependent_lines_together() -> None:
    """CI runs README lines on two lanes: lines that read another line's output (runs/p1 made, resumed,
    trained, exported), the Ray lines (`ray stop` stops every Ray) and the lines run inside a folder an
    earlier line made land in one group, in README order; unrelated searches do not."""
    rc, lanes = _readme_commands(), _readme_lanes()
    steps = [s for s in rc.plan(tests=True) if s.run]
    where = {}
    for n, group in enumerate(lanes.groups(steps)):
        assert [s.line for s in group] == sorted(s.line for s in group)
        for s in group:
            where.setdefault(s.run, n)

    def group_of(fragment: str) -> int:
        hits = {n for run, n in where.items() if fragment in run}
        assert len(hits) == 1, (fragment, hits)
        return hits.pop()

    p1 = group_of("--seed 0 --out runs/p1")
    for dependent in ("--resume runs/p1 ", "nas export runs/p1-train/model.pt --format onnx --out deploy/",
                      "nas export runs/p1-cpu/model.pt --precision int8", "--out runs/p1-cpu --resume"):
        assert group_of(dependent) == p1, dependent
    ray = group_of("ray start")
    assert group_of("ray stop") == ray == group_of("--address 127.0.0.1:6379") == group_of("--runner ray --workers 2 --out runs/ray")
    assert group_of("python -m pytest") == ray   # the suite starts Ray clusters of its own
    suite = next(s for s in steps if s.how == "tests")
    assert suite.run == suite.readme and suite.cwd == str(ROOT)   # verbatim, in the repository root
    assert all(s.how != "tests" for s in rc.plan())               # only with --with-tests (CI)
    assert group_of("profile_onnx.py") == group_of("nas latency bundle") == group_of("nas latency import bundle/")
    assert group_of("readme_figures.py --budgets") == group_of("--from-json") == group_of("ofa_search.py --write")
    assert group_of("--out mbconv-int8.json") == group_of("--table mbconv-int8.json")
    assert len({p1, ray, group_of("--out runs/nats"), group_of("--out runs/params")}) == 4
    assert lanes.resources("nas train runs/p1/best.json --out runs/p1-cpu -o resolution=32") == {"runs/p1", "runs/p1-cpu"}


@pytest.mark.quick
def test_readme_lanes_run_groups_in_order_and_stop_on_failure(tmp_path: Path) -> None:
    lanes = _readme_lanes()
    rc, cpu, tail = lanes.run_one("echo hi; exit 3", tmp_path, dict(os.environ), timeout=30)
    assert (rc, tail.strip()) == (3, "hi") and cpu >= 0
    rc, _, tail = lanes.run_one("sleep 20", tmp_path, dict(os.environ), timeout=0.5)
    assert rc == 124 and "timed out" in tail
    Step = namedtuple("Step", "line run cwd")
    done: list[int] = []
    fail = {3}

    def do(step: object, lane: int) -> bool:
        done.append(step.line)
        return step.line not in fail

    lanes.run_lanes([[Step(1, "a", ""), Step(2, "a", "")], [Step(3, "b", ""), Step(4, "b", "")]], 1, do, True)
    assert done == [1, 2, 3]   # the failed step ends its group, the other group still ran
    done.clear()
    lanes.run_lanes([[Step(3, "b", ""), Step(4, "b", "")], [Step(5, "c", "")]], 1, do, False)
    assert done == [3]         # without keep-going no new group starts


@pytest.mark.quick
def test_readme_lanes_timed_steps_run_alone() -> None:
    """A step that times this machine (a latency profile, a bounded search on `cpu-int8`) never overlaps
    another README step, the suite included (CI failed when a cpu-int8 table was profiled beside another int8
    job, then beside the suite); other steps do overlap."""
    import threading
    import time as _time
    lanes, rc = _readme_lanes(), _readme_commands()
    timed = {s.line for s in rc.plan(tests=True) if s.run and lanes.timed(s)}
    readme = {line: run for line, run in rc.readme_commands(rc.README.read_text())}
    bounded = next(line for line, run in readme.items() if "--target cpu-int8 --target cpu --latency-ms" in run)
    nsga2 = next(line for line, run in readme.items() if "--target cpu --strategy nsga2" in run)
    assert bounded in timed and nsga2 not in timed   # no bound: a slow table cannot fail it
    Step = namedtuple("Step", "line run cwd")
    spans: dict[int, tuple[float, float]] = {}
    lock = threading.Lock()

    def do(step: object, lane: int) -> bool:
        t0 = _time.monotonic()
        _time.sleep(0.6 if step.run == "suite" else 0.15)   # the suite long enough to meet another step
        with lock:
            spans[step.line] = (t0, _time.monotonic())
        return True

    def overlap(a: int, b: int) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    work = [[Step(1, "nas latency profile --space mbconv --out a.json", ""), Step(2, "nas list", "")],
            [Step(3, "nas list", ""), Step(4, "nas search --target cpu-int8 --latency-ms 6", ""),
             Step(5, "nas list", "")],
            [Step(6, "suite", ""), Step(7, "nas list", "")]]
    lanes.run_lanes(work, 3, do, True, first=lambda step: step.run == "suite")
    assert len(spans) == 7
    for t in (1, 4):
        assert not any(overlap(t, o) for o in (2, 3, 5, 6, 7) if o != t), spans
    assert not overlap(1, 4)
    assert overlap(6, 3) or overlap(6, 2) or overlap(6, 5)   # the suite ran beside an untimed step
    order: list[int] = []
    lanes.run_lanes(work, 1, lambda step, lane: order.append(step.line) or True, True,
                    first=lambda step: step.run == "suite")
    assert order == [6, 7, 3, 4, 5, 1, 2]   # the suite's group first; groups with a timed step last


@pytest.mark.quick
def test_readme_run_counts_failures_not_the_suites_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A passing test-suite step prints its whole output and is not a failure; a failing command is."""
    rc = _readme_commands()
    suite = rc.Step(61, "suite", "echo 3 passed", "tests", "", str(tmp_path))
    ok = rc.Step(80, "nas list", "true", "verbatim")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert rc.run([suite, ok], tmp_path / "a", timeout=30, keep_going=False, lanes=2) == 0
    out = capsys.readouterr().out
    assert "3 passed" in out and "2 steps, 0 failed" in out
    bad = rc.Step(81, "nas x", "exit 4", "verbatim")
    assert rc.run([ok, bad], tmp_path / "b", timeout=30, keep_going=True, lanes=1) == 1
    assert "2 steps, 1 failed" in capsys.readouterr().out
