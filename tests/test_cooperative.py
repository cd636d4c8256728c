"""Cooperating searches on one shared study, with real processes, on a journal file and on a real
PostgreSQL server: the study ends with exactly the requested trials, no arch is evaluated twice, every
process does part of the work, and a SIGKILLed process's running trial is evaluated again, once, by
another. Claim rules (duplicates, the target, stale claims) are also checked directly on the store."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from nas.pipeline.cooperative import open_any_store, run_cooperative
from nas.store.shared import BEAT, KEY, OWNER, SharedStudyStore, is_shared_spec
from nas.strategies.catalog import STRATEGIES
from nas.store.trial import Trial
from tests.coop_worker import SPACE, SleepScore
from tests.postgres_server import postgres_url, study_name  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(params=["journal", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    return str(request.getfixturevalue("postgres_url"))


def all_trials(spec: str, study: str) -> list[Any]:
    from nas.store.storage import make_storage
    return optuna.load_study(study_name=study, storage=make_storage(spec)).get_trials(deepcopy=False)


def visible(spec: str, study: str) -> list[Any]:
    return [t for t in all_trials(spec, study) if not t.user_attrs.get("interrupted")]


def worker(spec: str, study: str, trials: int, sleep_s: float, start_at: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.coop_worker", spec, study, str(trials), str(sleep_s),
                             str(start_at), "0.5"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_shared_specs() -> None:
    assert is_shared_spec("postgresql://u@h/db") and is_shared_spec("mysql+pymysql://u@h/db")
    assert is_shared_spec("journal:/x/j.log")
    assert not is_shared_spec("sqlite:///x.db") and not is_shared_spec("jsonl:/x.jsonl")


def test_claims_refuse_duplicates_and_the_target(shared_spec: str, study_name: str) -> None:
    store = open_any_store(shared_spec, study_name, space=SPACE)
    assert isinstance(store, SharedStudyStore)
    rng = np.random.default_rng(0)
    a, b, c = (SPACE.sample(rng) for _ in range(3))
    n_a = store.claim(a, target=2)
    assert n_a == 0
    other = open_any_store(shared_spec, study_name, space=SPACE)    # a second search on the study
    assert other.claim(a, target=2) is None                        # a is being evaluated by the first
    n_b = other.claim(b, target=2)
    assert n_b == 2                                                # (number 1 was the withdrawn claim)
    assert store.claim(c, target=2) is None                        # 2 claims stand: the target is reached
    store.append(Trial(n_a, a, {"score": 1.0}))
    other.append(Trial(n_b, b, {"score": 2.0}))
    assert [(t.number, t.arch) for t in store.trials()] == [(0, a), (2, b)]   # withdrawn claims are hidden
    assert len(all_trials(shared_spec, study_name)) == 4


def test_stale_claims_are_taken_over_once(shared_spec: str, study_name: str) -> None:
    store = open_any_store(shared_spec, study_name, space=SPACE, heartbeat_s=1.0)
    rng = np.random.default_rng(1)
    a, b = SPACE.sample(rng), SPACE.sample(rng)
    tid_a = store._create(a, 0)
    tid_b = store._create(b, 0)
    # a: owner on another host, heartbeat silent for longer than the grace period; b: fresh heartbeat
    store.storage.set_trial_system_attr(tid_a, OWNER, "otherhost:1")
    store.storage.set_trial_system_attr(tid_a, BEAT, time.time() - 60)
    store.storage.set_trial_system_attr(tid_b, OWNER, "otherhost:2")
    fresh = open_any_store(shared_spec, study_name, space=SPACE, heartbeat_s=1.0)
    st = fresh.state()
    assert [ft._trial_id for ft in st.stale] == [tid_a] and len(st.running) == 2
    assert fresh.take_over(st.stale[0], max_retries=2) == (a, 1)
    assert fresh.take_over(st.stale[0], max_retries=2) is None      # someone got there first: no second retry
    assert [ft._trial_id for ft in fresh.state().running] == [tid_b]


def test_two_processes_share_the_work_exactly(shared_spec: str, study_name: str) -> None:
    trials = 24
    start_at = time.time() + 6   # both start their loops together, after imports
    procs = [worker(shared_spec, study_name, trials, 0.15, start_at) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    done = visible(shared_spec, study_name)
    assert len(done) == trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    assert len({t.system_attrs[KEY] for t in done}) == trials            # no arch evaluated twice
    assert sum(r["evaluated"] for r in reports) == trials                 # no evaluation wasted
    assert all(r["evaluated"] >= 4 for r in reports), reports            # both did part of it


def test_killed_process_trial_is_retried_by_the_other(shared_spec: str, study_name: str) -> None:
    trials = 12
    slow = worker(shared_spec, study_name, trials, 30.0, time.time())     # claims one arch and hangs on it
    deadline = time.monotonic() + 60
    while not [t for t in all_trials_or_none(shared_spec, study_name) if t.state.name == "RUNNING"]:
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
        time.sleep(0.1)
    claimed = next(t for t in all_trials(shared_spec, study_name) if t.state.name == "RUNNING")
    slow.send_signal(signal.SIGKILL)
    slow.communicate()
    killed_at = time.time()
    fast = worker(shared_spec, study_name, trials, 0.05, time.time())
    out, err = fast.communicate(timeout=240)
    assert fast.returncode == 0, err
    every = all_trials(shared_spec, study_name)
    done = [t for t in every if not t.user_attrs.get("interrupted")]
    assert len(done) == trials and len({t.system_attrs[KEY] for t in done}) == trials
    retried = [t for t in done if t.system_attrs[KEY] == claimed.system_attrs[KEY]]
    assert len(retried) == 1 and retried[0].user_attrs.get("attempt") == 1
    old = next(t for t in every if t._trial_id == claimed._trial_id)
    assert old.state.name == "FAIL" and old.user_attrs["interrupted"]
    assert retried[0].datetime_start.timestamp() - killed_at < 30   # a dead pid on this host: no grace wait


def all_trials_or_none(spec: str, study: str) -> list[Any]:
    try:
        return all_trials(spec, study)
    except KeyError:   # study not created yet
        return []


def test_in_process_cooperation_matches_the_plain_loop_on_one_search(tmp_path: Path) -> None:
    """One search alone on a shared store ends exactly like the plain loop would: `trials` trials, all told."""
    spec = f"journal:{tmp_path / 'j.log'}"
    store = open_any_store(spec, "solo", space=SPACE, heartbeat_s=0.5)
    strategy = STRATEGIES.get("evolution")(SPACE, seed=0, population=4, sample_size=2)
    out = run_cooperative(strategy, SleepScore(0.0), 15, store, progress=False, heartbeat_s=0.5)
    assert [t.number for t in out] == list(range(15)) and len(strategy.history) == 15
    assert len({t.arch for t in out}) == 15


@pytest.mark.slow       # two full `nas search` processes: 25-35 s on a busy 2-core machine
@pytest.mark.postgres
def test_two_nas_search_commands_on_one_postgres_study(postgres_url: str, study_name: str, tmp_path: Path) -> None:
    from tests.test_store import TINY, tiny_table
    table = tiny_table(tmp_path / "t.json")
    cmd = [sys.executable, "-m", "nas.cli", "search", "--space", "mbconv", *TINY, "--target", str(table),
           "--evaluator-option", "proxy=params", "--trials", "12", "--quiet",
           "--storage", postgres_url, "--study", study_name, "--heartbeat", "1"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("best of 12 trials" in out for out, _ in outs)   # each reports the whole study
    done = visible(postgres_url, study_name)
    assert len(done) == 12 and len({t.system_attrs[KEY] for t in done}) == 12


def test_heartbeat_must_be_positive(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from nas.cli.main import main
    code = main(["search", "--heartbeat", "0", "--storage", f"journal:{tmp_path / 'j.log'}", "--study", "s"])
    assert code == 2 and "--heartbeat must be a positive number of seconds, got 0" in capsys.readouterr().err
