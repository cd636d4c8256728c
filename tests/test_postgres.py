"""The trial store and `nas search` on a real PostgreSQL server (tests marked `postgres`), and the
one-line errors for a storage that cannot be used: unreachable server, wrong password, unknown
database, missing driver, a study of another search (exit code, masked password, no traceback,
nothing written)."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.cli.main import main
from nas.pipeline.report import load_search
from nas.store.study import open_store
from nas.store.storage import make_storage
from nas.store.errors import mask
from nas.store.trial import COMPLETE, FAILED, Trial
from tests.postgres_server import postgres_url, study_name  # noqa: F401  (fixtures)
from tests.test_store import SPACE, TINY, tiny_table

ROOT = Path(__file__).resolve().parents[1]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def search_args(table: Path, *extra: str) -> list[str]:
    return ["search", "--space", "mbconv", *TINY, "--target", str(table), "--evaluator-option", "proxy=params",
            "--quiet", *extra]


def test_mask_hides_only_the_password() -> None:
    assert mask("postgresql://nas:s3cr:et@db.example:5432/x") == "postgresql://nas:***@db.example:5432/x"
    assert mask("postgresql+psycopg://u:p@h/db?sslmode=require") == "postgresql+psycopg://u:***@h/db?sslmode=require"
    assert mask("postgresql://u@h/db") == "postgresql://u@h/db" and mask("journal:/a:b@c") == "journal:/a:b@c"


# ---- the real server ------------------------------------------------------------------------------
@pytest.mark.postgres
def test_store_round_trip_resume_and_report(postgres_url: str, study_name: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = open_store(postgres_url, study_name, space=SPACE)
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(4)]
    written = []
    for i, (metrics, status, err) in enumerate([({"score": 1.25, "latency_ms": 3.5, "naswot": -math.inf}, COMPLETE,
                                                 None), ({}, FAILED, "RuntimeError: boom"),
                                                ({"score": 7.0, "latency_ms": 2.0}, COMPLETE, None)]):
        t = Trial(store.start(archs[i]), archs[i], metrics, status, err, 0.5 * (i + 1), 100 + i)
        store.append(t)
        written.append(t)
    store.set_config({"space": "mbconv", "seed": 3})
    store.start(archs[3])                          # left RUNNING by a "killed" search
    again = open_store(postgres_url, study_name, space=SPACE)
    assert again.trials() == written and again.get_config() == {"space": "mbconv", "seed": 3}
    assert again.recover() == [(archs[3], 1)]      # resume: the running trial is retried
    assert again.trials() == written
    study = optuna.load_study(study_name=study_name, storage=postgres_url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "FAIL"]
    assert study.best_trial.value == 7.0
    record = load_search(None, postgres_url, study_name)
    assert record.trials == written
    code, text, err = cli(capsys, "report", "--storage", postgres_url, "--study", study_name, "--out",
                          str(tmp_path / "rep"))
    assert code == 0, err
    assert text.startswith("3 trials (1 failed)") and (tmp_path / "rep" / "trials.csv").read_text().count("\n") == 4


@pytest.mark.postgres
def test_cli_search_creates_and_resumes_a_study(postgres_url: str, study_name: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    table = tiny_table(tmp_path / "t.json")
    storage = ["--storage", postgres_url, "--study", study_name]
    code, text, err = cli(capsys, *search_args(table, "--trials", "5", *storage))
    assert code == 0, err
    first = load_search(None, postgres_url, study_name).trials
    assert [t.number for t in first] == list(range(5))
    code, _, err = cli(capsys, *search_args(table, "--trials", "8", *storage))   # the same command resumes
    assert code == 0, err
    rec = load_search(None, postgres_url, study_name)
    assert len(rec.trials) == 8 and rec.trials[:5] == first and rec.config["space"] == "mbconv"
    assert len({t.arch for t in rec.trials}) == 8
    # another strategy on the same study: refused, naming the study and the (masked) URL, nothing written
    code, _, err = cli(capsys, *search_args(table, "--trials", "9", "--strategy", "random", *storage))
    assert code == 2 and "other settings (strategy)" in err and mask(postgres_url) in err
    assert "nas-test-pw" not in err and len(err.strip().splitlines()) == 1
    assert len(optuna.load_study(study_name=study_name, storage=postgres_url).trials) == 8


# ---- bad input ------------------------------------------------------------------------------------
def run_cli(*argv: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"import sys\n{prelude}\nfrom nas.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def assert_one_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == code, proc.stderr
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_unreachable_server(tmp_path: Path) -> None:
    table = tiny_table(tmp_path / "t.json")
    out = tmp_path / "run"
    proc = run_cli(*search_args(table, "--storage", "postgresql://nas:hunter2@127.0.0.1:9/db", "--study", "s",
                                "--out", str(out)))
    assert_one_line(proc, 1, "postgresql://nas:***@127.0.0.1:9/db", "cannot reach the database server",
                    "is it running")
    assert "hunter2" not in proc.stderr and not out.exists()


def test_missing_driver(tmp_path: Path) -> None:
    table = tiny_table(tmp_path / "t.json")
    proc = run_cli(*search_args(table, "--storage", "postgresql://nas:pw@127.0.0.1/db", "--study", "s"),
                   prelude="sys.modules['psycopg'] = None")   # as if psycopg were not installed
    assert_one_line(proc, 1, "postgresql://nas:***@127.0.0.1/db", "driver psycopg", "pip install 'nas[postgres]'")


@pytest.mark.postgres
def test_wrong_password_and_unknown_database(postgres_url: str, tmp_path: Path) -> None:
    table = tiny_table(tmp_path / "t.json")
    user, rest = postgres_url.split("://", 1)[1].split("@", 1)
    bad = f"postgresql://{user.split(':')[0]}:not-the-password@{rest}"
    proc = run_cli(*search_args(table, "--storage", bad, "--study", "s", "--out", str(tmp_path / "run")))
    assert_one_line(proc, 2, mask(bad), "refused the user or password")
    assert "not-the-password" not in proc.stderr and not (tmp_path / "run").exists()
    nodb = postgres_url.rsplit("/", 1)[0] + "/no_such_db"
    proc = run_cli(*search_args(table, "--storage", nodb, "--study", "s"))
    assert_one_line(proc, 2, "no database 'no_such_db'", "createdb no_such_db")


@pytest.mark.postgres
def test_study_of_another_space_is_refused(postgres_url: str, study_name: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    table = tiny_table(tmp_path / "t.json")
    assert cli(capsys, *search_args(table, "--trials", "2", "--storage", postgres_url, "--study", study_name))[0] == 0
    proc = run_cli("search", "--space", "nasnet", "--target", "xeon-2.8ghz", "--trials", "3", "--quiet",
                   "--storage", postgres_url, "--study", study_name)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and study_name in proc.stderr
    assert len(make_storage(postgres_url).get_all_trials(
        make_storage(postgres_url).get_study_id_from_name(study_name))) == 2
