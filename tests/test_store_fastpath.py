"""The one-transaction finish (nas/store/fastpath.py) stores exactly what Optuna's public API stores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.store.study import open_store
from nas.store.fastpath import supported
from nas.store.trial import COMPLETE, FAILED, Trial
from search_spaces.catalog import get_space

SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)


def _fill(store, archs) -> None:  # type: ignore[no-untyped-def]
    for i, a in enumerate(archs):
        n = store.start(a)
        if i % 3 == 2:
            store.append(Trial(n, a, {}, FAILED, "RuntimeError: boom", 0.5, i))
        else:
            store.append(Trial(n, a, {"score": float(i), "latency_ms": 1.0 + i}, COMPLETE, None, 0.25, i))


def test_fast_and_public_paths_store_the_same(tmp_path: Path) -> None:
    archs = [SPACE.sample(np.random.default_rng(s)) for s in range(9)]
    stores = {m: open_store(f"sqlite:///{tmp_path / m}.db", "s", space=SPACE) for m in ("fast", "public")}
    assert stores["fast"]._fast and supported(stores["fast"].storage)
    stores["public"]._fast = False
    for st in stores.values():
        _fill(st, archs)
    fast, public = (stores[m].study.get_trials(deepcopy=False) for m in ("fast", "public"))
    assert len(fast) == len(public) == 9
    for f, p in zip(fast, public):
        assert (f.number, f.state, f.values, f.params, f.user_attrs) == (p.number, p.state, p.values, p.params,
                                                                          p.user_attrs)
        assert f.distributions == p.distributions and len(f.params) == len(SPACE.decisions)
    assert stores["fast"].trials() == stores["public"].trials()
    # a reopened store reads them back, and an Optuna sampler accepts the stored params as history
    again = open_store(f"sqlite:///{tmp_path / 'fast'}.db", "s", space=SPACE)
    assert again.trials() == stores["fast"].trials()
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'fast'}.db",
                              sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    d = SPACE.decisions[1]
    assert study.ask().suggest_categorical(d.name, list(d.choices)) in d.choices


def test_journal_storage_uses_the_public_path(tmp_path: Path) -> None:
    store = open_store(f"journal:{tmp_path / 'j.log'}", "s", space=SPACE)
    assert not store._fast
    _fill(store, [SPACE.sample(np.random.default_rng(s)) for s in range(3)])
    assert len(store.trials()) == 3 and len(store.study.trials[0].params) == len(SPACE.decisions)


def test_a_trial_left_running_has_no_half_written_result(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'r.db'}", "s", space=SPACE)
    arch = SPACE.sample(np.random.default_rng(0))
    store.start(arch)   # the process dies here: nothing but the RUNNING trial is stored
    ft, = store.study.get_trials(deepcopy=False)
    assert ft.state == optuna.trial.TrialState.RUNNING and "metrics" not in ft.user_attrs
    fresh = open_store(f"sqlite:///{tmp_path / 'r.db'}", "s", space=SPACE)
    assert fresh.recover(2) == [(arch, 1)] and fresh.trials() == []


@pytest.mark.parametrize("n", [40])
def test_fast_path_is_cheaper(tmp_path: Path, n: int) -> None:
    """Interleaved, so machine load hits both alike: the fast path takes under 60% of the public one."""
    import time
    stores = {m: open_store(f"sqlite:///{tmp_path / m}.db", "s", space=SPACE) for m in ("fast", "public")}
    stores["public"]._fast = False
    spent = {m: [] for m in stores}
    rng = np.random.default_rng(1)
    for i in range(n):
        a = SPACE.sample(rng)
        for m, st in stores.items():
            t0 = time.perf_counter()
            st.append(Trial(st.start(a), a, {"score": 1.0}, COMPLETE, None, 0.0, 0))
            spent[m].append(time.perf_counter() - t0)
    assert np.median(spent["fast"]) < 0.6 * np.median(spent["public"])


def _reader(path: Path) -> list[tuple[int, str]]:
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{path}")
    return [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]


def test_batched_store_writes_quick_trials_together(tmp_path: Path) -> None:
    """`batch=True` (the local --out store): the first trial and every slow one are started as
    RUNNING rows; quick ones (under 1 s) wait for the batch (256 trials or 5 s) and then land in number order,
    identical to what the unbatched store writes."""
    path = tmp_path / "b.db"
    batched = open_store(f"sqlite:///{path}", "s", space=SPACE, batch=True)
    batched._batch.max_seconds = 600.0   # a loaded machine must not flush on time here
    plain = open_store(f"sqlite:///{tmp_path / 'p.db'}", "s", space=SPACE)
    batched.set_constraints([("latency_ms", 4.0, True)])
    plain.set_constraints([("latency_ms", 4.0, True)])
    archs = [SPACE.sample(np.random.default_rng(s)) for s in range(12)]
    n0 = batched.start(archs[0])
    assert _reader(path) == [(0, "RUNNING")]                       # first trial: a row at once
    for i, a in enumerate(archs[:10]):
        n = n0 if i == 0 else batched.start(a)
        batched.append(Trial(n, a, {"score": float(i), "latency_ms": 1.0 + i}, COMPLETE, None, 0.001, i))
        plain.append(Trial(plain.start(a), a, {"score": float(i), "latency_ms": 1.0 + i}, COMPLETE, None, 0.001, i))
    assert _reader(path) == [(0, "COMPLETE")]                      # 9 quick trials not written yet
    slow = batched.start(archs[10])                                # the last one was quick: deferred too
    batched.append(Trial(slow, archs[10], {"score": 10.0, "latency_ms": 11.0}, COMPLETE, None, 1.5, 10))
    plain.append(Trial(plain.start(archs[10]), archs[10], {"score": 10.0, "latency_ms": 11.0}, COMPLETE, None, 1.5, 10))
    n = batched.start(archs[11])                                   # after a slow one: a RUNNING row, the rest flushed
    assert _reader(path) == [(i, "COMPLETE") for i in range(11)] + [(11, "RUNNING")] and n == 11
    batched.append(Trial(n, archs[11], {}, FAILED, "RuntimeError: boom", 0.01, 11))
    plain.append(Trial(plain.start(archs[11]), archs[11], {}, FAILED, "RuntimeError: boom", 0.01, 11))
    batched.flush()
    got, want = (st.study.get_trials(deepcopy=False) for st in (batched, plain))
    assert [(f.number, f.state, f.values, f.params, f.user_attrs, f.system_attrs) for f in got] == \
        [(f.number, f.state, f.values, f.params, f.user_attrs, f.system_attrs) for f in want]
    assert open_store(f"sqlite:///{path}", "s").trials() == plain.trials()


def test_batched_store_refuses_a_second_writer(tmp_path: Path) -> None:
    """Batched numbers assume one writer; a trial written behind its back is an error, not a renumbering."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    batched = open_store(url, "s", space=SPACE, batch=True)
    archs = [SPACE.sample(np.random.default_rng(s)) for s in range(3)]
    batched.append(Trial(batched.start(archs[0]), archs[0], {"score": 1.0}, COMPLETE, None, 0.001, 0))
    n = batched.start(archs[1])                                    # deferred
    other = open_store(url, "s", space=SPACE)
    other.append(Trial(other.start(archs[2]), archs[2], {"score": 2.0}, COMPLETE, None, 0.001, 0))
    batched.append(Trial(n, archs[1], {"score": 3.0}, COMPLETE, None, 0.001, 0))
    with pytest.raises(RuntimeError, match="another process writes"):
        batched.flush()


def test_batched_store_with_several_trials_in_flight(tmp_path: Path) -> None:
    """A runner with several evaluations at once (Ray) finishes them out of order; each stored trial
    keeps the number and arch it started with, and a slow start in between writes the others first."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = open_store(url, "s", space=SPACE, batch=True)
    archs = [SPACE.sample(np.random.default_rng(s)) for s in range(5)]
    store.append(Trial(store.start(archs[0]), archs[0], {"score": 0.0}, COMPLETE, None, 0.001, 0))
    n1, n2 = store.start(archs[1]), store.start(archs[2])        # both deferred
    store.append(Trial(n2, archs[2], {"score": 2.0}, COMPLETE, None, 0.001, 0))
    store.append(Trial(n1, archs[1], {"score": 1.0}, COMPLETE, None, 1.5, 0))   # slow: next start is a row
    n3 = store.start(archs[3])
    n4 = store.start(archs[4])                                   # the last eval was slow: a row too
    assert _reader(tmp_path / "f.db") == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "COMPLETE"), (3, "RUNNING"),
                                          (4, "RUNNING")]
    store.append(Trial(n4, archs[4], {"score": 4.0}, COMPLETE, None, 0.001, 0))
    store.append(Trial(n3, archs[3], {"score": 3.0}, COMPLETE, None, 0.001, 0))
    store.flush()
    got = open_store(url, "s").trials()
    assert [(t.number, t.arch, t.metrics["score"]) for t in got] == [(i, archs[i], float(i)) for i in range(5)]
