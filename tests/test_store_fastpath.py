"""The one-transaction finish (nas/store_fastpath.py) stores exactly what Optuna's public API stores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.store import open_store
from nas.store_fastpath import supported
from nas.trial import COMPLETE, FAILED, Trial
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
