"""Contention in `nas latency validate`: load above the free cores, spread of repeats, the measurement's
own repeatability (faked load averages; one tiny real run)."""
from __future__ import annotations

import numpy as np
import pytest

import latency.validate as validate_mod
from latency.contention import Load, choose_clock, current_load, halves, spread
from latency.validate import validate
from latency.validate_report import format_report
from search_spaces.catalog import get_space
from tests.test_validate import TINY, synthetic_table


def test_load_and_free_cores() -> None:
    busy = current_load(1, getloadavg=lambda: (2.6, 2.0, 1.0), cores=2)
    quiet = current_load(1, getloadavg=lambda: (0.4, 0.3, 0.2), cores=2)
    assert busy is not None and quiet is not None
    assert busy.busy and busy.free_cores == 0.0
    assert not quiet.busy and quiet.free_cores == pytest.approx(1.6)
    assert Load(1.5, 2, 1).busy and not Load(1.0, 2, 1).busy   # 0.5 free < 1 needed; 1.0 free is enough
    assert current_load(1, getloadavg=lambda: (_ for _ in ()).throw(OSError())) is None


def test_choose_clock() -> None:
    busy, quiet = Load(3.0, 2, 1), Load(0.1, 2, 1)
    assert choose_clock("auto", busy, 1)[0] == "cpu" and "--clock auto" in str(choose_clock("auto", busy, 1)[1])
    assert choose_clock("auto", quiet, 1) == ("cpu", None)             # one thread: the cpu clock, quiet or not
    assert choose_clock("auto", Load(0.1, 4, 2), 2) == ("wall", None)   # cpu clock needs one thread
    clock, note = choose_clock("auto", Load(9.0, 2, 2), 2)
    assert clock == "wall" and "--threads 1" in str(note) and "load average 9.00 on 2 cores" in str(note)
    clock, note = choose_clock("wall", busy, 1)
    assert clock == "wall" and "rerun with --clock cpu" in str(note) and "load average 3.00 on 2 cores" in str(note)
    assert choose_clock("wall", quiet, 1) == ("wall", None) and choose_clock("cpu", busy, 1) == ("cpu", None)


def test_spread_and_halves() -> None:
    assert spread(np.array([10.0, 20.0, 0.0]), np.array([1.0, 4.0, 1.0])) == pytest.approx(0.15)
    assert halves(np.array([1.0, 1.0, 3.0, 3.0])) == (1.0, 3.0)


def test_validate_reports_busy_machine_and_repeatability(monkeypatch: pytest.MonkeyPatch) -> None:
    space = get_space("mbconv", **TINY)
    table = synthetic_table(space)
    monkeypatch.setattr(validate_mod, "current_load", lambda threads: Load(5.0, 2, threads))
    r = validate(space, table, samples=3, rounds=2, clock="auto", progress=False).report
    assert r["clock"] == "cpu" and r["load"] == {"load1": 5.0, "cores": 2, "busy": True}
    assert any("timing with the cpu clock" in w for w in r["warnings"])
    rep = r["repeatability"]
    assert rep["n"] == 3 and -1.0 <= rep["spearman"] <= 1.0 and rep["mape_pct"] >= 0
    text = format_report(r)
    assert "measured vs itself (ceiling)" in text and "machine busy" in text
