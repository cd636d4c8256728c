"""The Optuna trial store: exact round trips, recovery of interrupted trials, resume through the CLI,
concurrent writers, bad specs, and `nas report`."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from latency.table import LatencyTable
from nas.cli.main import main
from nas.core.errors import UsageError
from nas.pipeline.report import load_search, pareto_front
from nas.pipeline.runner import run_search
from nas.store.study import OptunaStore, open_store
from nas.store.storage import make_storage
from nas.strategies.catalog import STRATEGIES
from nas.store.trial import COMPLETE, FAILED, Trial
from search_spaces.catalog import get_space

ROOT = Path(__file__).resolve().parents[1]
SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
TINY = ["-o", "width_mult=0.25", "-o", "resolution=32", "-o", "num_classes=10"]


def score(arch) -> dict[str, float]:  # type: ignore[no-untyped-def]
    skips = sum(g == "skip" for g in arch.genes)
    return {"score": float(sum(int(g[1]) + int(g[3]) for g in arch.genes if g != "skip")),
            "latency_ms": 10.0 - 0.3 * skips}


def tiny_table(path: Path) -> Path:
    """A synthetic latency table for the tiny space: cheap searches through the real CLI."""
    table = LatencyTable("mbconv", SPACE.options(), {"device": "synthetic", "call_overhead_ms": 0.5})
    for i, spec in enumerate(SPACE.all_layers()):
        table.add(spec.key, 0.05 + 0.01 * (i % 7))
    return table.save(path)


@pytest.fixture(params=["sqlite", "journal", "jsonl"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return {"sqlite": f"sqlite:///{tmp_path / 't.db'}", "journal": f"journal:{tmp_path / 't.log'}",
            "jsonl": f"jsonl:{tmp_path / 't.jsonl'}"}[request.param]


def test_round_trip_is_exact(spec: str) -> None:
    store = open_store(spec, "s", space=SPACE)
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(3)]
    written = []
    for i, (arch, metrics, status, err) in enumerate([
            (archs[0], {"score": 1.25, "latency_ms": 3.5, "naswot": -math.inf}, COMPLETE, None),
            (archs[1], {}, FAILED, "RuntimeError: boom\nTraceback ..."),
            (archs[2], {"latency_ms": 2.0}, COMPLETE, None)]):  # complete, but without the objective
        number = store.start(arch) if hasattr(store, "start") else i
        t = Trial(number, arch, metrics, status, err, 0.123456 * (i + 1), 1000 + i)
        store.append(t)
        written.append(t)
    again = open_store(spec, "s", space=SPACE).trials()
    assert again == written and [t.number for t in again] == [0, 1, 2]


def test_dashboard_view_of_the_study(tmp_path: Path) -> None:
    """What optuna-dashboard reads: objective values, metric names, params, block strings."""
    url = f"sqlite:///{tmp_path / 't.db'}"
    store = open_store(url, "s", space=SPACE)
    trials = run_search(STRATEGIES.get("random")(SPACE, seed=0), score, 5, store, progress=False)
    study = optuna.load_study(study_name="s", storage=url)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.metric_names == ["score"]
    ft = study.trials[2]
    assert ft.state == optuna.trial.TrialState.COMPLETE and ft.value == trials[2].metrics["score"]
    assert ft.params == {d.name: g for d, g in zip(SPACE.decisions, trials[2].arch.genes)}
    assert ft.user_attrs["arch_str"] == SPACE.format(trials[2].arch)
    assert study.best_trial.value == max(t.metrics["score"] for t in trials)


def test_multi_objective_study(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}", "mo", space=SPACE,
                       objectives=(("score", True), ("latency_ms", False)))
    run_search(STRATEGIES.get("random")(SPACE, seed=0), score, 3, store, progress=False)
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path / 't.db'}")
    assert [len(t.values) for t in study.trials] == [2, 2, 2]
    with pytest.raises(UsageError, match="optimises"):
        open_store(f"sqlite:///{tmp_path / 't.db'}", "mo", space=SPACE)   # single objective != stored two


def test_recover_marks_running_trials_and_limits_retries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    store = open_store(url, "s", space=SPACE)
    rng = np.random.default_rng(1)
    a, b, c = (SPACE.sample(rng) for _ in range(3))
    store.append(Trial(store.start(a), a, score(a), seed=1))
    store.start(b)                       # left running by a "killed" search
    store.start(c, attempt=2)            # already retried twice
    fresh = open_store(url, "s", space=SPACE)
    assert fresh.recover(max_retries=2) == [(b, 1)]
    trials = fresh.trials()
    assert [(t.number, t.status) for t in trials] == [(0, COMPLETE), (2, FAILED)]
    assert "interrupted 3 times" in (trials[1].error or "")
    states = [t.state.name for t in optuna.load_study(study_name="s", storage=url).trials]
    assert states == ["COMPLETE", "FAIL", "FAIL"]
    assert fresh.recover() == []


def test_resume_after_crash_retries_the_running_arch(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    calls = []

    def dies_at_7(arch):  # type: ignore[no-untyped-def]
        calls.append(arch)
        if len(calls) == 8:
            raise KeyboardInterrupt   # the search process stops mid-evaluation
        return score(arch)

    with pytest.raises(KeyboardInterrupt):
        run_search(STRATEGIES.get("evolution")(SPACE, seed=2, population=4, sample_size=2), dies_at_7,
                   20, open_store(url, "s", space=SPACE), progress=False)
    before = open_store(url, "s").trials()
    assert len(before) == 7
    store = open_store(url, "s", space=SPACE)
    trials = run_search(STRATEGIES.get("evolution")(SPACE, seed=2, population=4, sample_size=2), score, 20, store,
                        progress=False)
    final = open_store(url, "s").trials()
    assert len(final) == len(trials) == 20 and all(t.ok for t in final)
    assert final[:7] == before
    assert final[7].number == 8 and final[7].arch == calls[7]   # trial 7 was interrupted, then redone as 8
    assert len({t.number for t in final}) == 20


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    open_store(url, "s", space=SPACE)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from nas.store.study import open_store\nfrom nas.store.trial import Trial\nfrom search_spaces.catalog import get_space\n"
            "import numpy as np\n"
            "sp = get_space('mbconv', resolution=32, width_mult=0.25, num_classes=10)\n"
            f"st = open_store({url!r}, 's', space=sp)\n"
            "rng = np.random.default_rng(int(sys.argv[1]))\n"
            "for i in range(30):\n"
            "    a = sp.sample(rng); st.append(Trial(st.start(a), a, {'score': float(i)}, seed=int(sys.argv[1])))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(k)]) for k in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    trials = open_store(url, "s").trials()
    assert len(trials) == 60 and sorted(t.number for t in trials) == list(range(60))
    assert sorted(t.seed for t in trials) == [1] * 30 + [2] * 30 and all(t.ok for t in trials)


@pytest.mark.parametrize("spec,error,needle", [
    ("trials.db", UsageError, "valid forms"),
    ("journal:", UsageError, "names no file"),
    ("nosuchdb://x/y", UsageError, "not a storage URL SQLAlchemy knows.*valid forms"),
])
def test_bad_storage_specs(spec: str, error: type, needle: str) -> None:
    with pytest.raises(error, match=needle):
        make_storage(spec)


def test_load_missing_study_lists_the_stored_ones(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    open_store(url, "present")
    with pytest.raises(UsageError, match="studies there: present"):
        OptunaStore(make_storage(url), "absent", create=False)


# ---- through the CLI ------------------------------------------------------------------------------
def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_resume_storage_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = str(tiny_table(tmp_path / "tiny.json"))
    base = ["search", "--space", "mbconv", *TINY, "--target", table, "--evaluator-option", "proxy=params",
            "--evaluator-option", "batch=2", "--quiet"]
    out = tmp_path / "run"
    code, text, _ = cli(capsys, *base, "--trials", "4", "--out", str(out))
    assert code == 0 and "Pareto front" in text and "optuna-dashboard sqlite:///" in text
    first = load_search(out).trials
    # --resume DIR takes every setting from DIR; only --trials changes
    code, _, err = cli(capsys, "search", "--resume", str(out), "--trials", "7", "--quiet")
    assert code == 0, err
    rec = load_search(out)
    assert len(rec.trials) == 7 and rec.trials[:4] == first and rec.config["study"] == "run"
    code, _, err = cli(capsys, "search", "--resume", str(out), "--seed", "5", "--quiet")
    assert code == 2 and "other settings (seed)" in err
    code, _, err = cli(capsys, "search", "--resume", str(tmp_path / "nothing"))
    assert code == 2 and "no config.json" in err
    # --no-resume starts over in the same folder
    assert cli(capsys, *base, "--trials", "2", "--out", str(out), "--no-resume")[0] == 0
    assert [t.number for t in load_search(out).trials] == [0, 1]

    # a journal storage + study, no --out: the same command resumes
    journal = ["--storage", f"journal:{tmp_path / 'j.log'}", "--study", "exp1"]
    assert cli(capsys, *base, "--trials", "3", *journal)[0] == 0
    assert cli(capsys, *base, "--trials", "5", *journal)[0] == 0
    assert len(load_search(None, f"journal:{tmp_path / 'j.log'}", "exp1").trials) == 5

    # the report: PNG, self-contained HTML (inline SVG, no scripts or links), CSV
    code, text, err = cli(capsys, "report", str(out), "--json")
    info = json.loads(text)
    assert code == 0 and info["trials"] == 2
    assert Path(info["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = Path(info["html"]).read_text()
    assert "<svg" in page and "<script" not in page and "src=" not in page and "href=\"http" not in page
    rows = Path(info["csv"]).read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("number,status,")
    assert info["pareto"] == [{"number": t.number, "score": t.metrics["score"], "latency_ms": t.metrics["latency_ms"],
                               "arch": SPACE.format(t.arch)} for t in pareto_front(load_search(out).trials)]
    code, _, err = cli(capsys, "report", str(tmp_path))
    assert code == 2 and "holds no trials" in err


def test_pareto_front() -> None:
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(5)]
    pts = [(1.0, 5.0), (2.0, 4.0), (2.0, 6.0), (3.0, 6.0), (0.5, math.nan)]
    trials = [Trial(i, a, {"latency_ms": x, "score": y}) for i, (a, (x, y)) in enumerate(zip(archs, pts))]
    assert [t.number for t in pareto_front(trials)] == [0, 2]


def test_local_search_does_not_import_ray() -> None:
    code = ("import sys; import nas.cli.main, nas.pipeline.search, nas.pipeline.runner, nas.store.study, nas.pipeline.report\n"
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("argv,needle", [
    (["search", "--target", "cpu", "--workers", "2"], "--runner ray"),
    (["search", "--target", "cpu", "--runner", "ray", "--workers", "0"], "--workers must be at least 1"),
    (["search", "--target", "cpu", "--max-retries", "-1"], "--max-retries"),
    (["search", "--resume", "somewhere", "--no-resume"], "cannot go with --no-resume"),
    (["search", "--target", "cpu", "--storage", "journal:"], "names no file"),
    (["search", "--target", "cpu", "--strategy-option", "population=x"], "cannot take the options given"),
    (["report"], "give a search folder"),
])
def test_cli_bad_run_settings(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, *argv)
    assert code == 2 and needle in err and err.count("\n") == 1
