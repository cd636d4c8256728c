"""A host table profiled under contention is checked against a quiet re-timing before it is cached
(latency/host_check.py). Load readings and re-timings are made up here: no real load, no timing."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from latency import host_check, host_tables
from latency.contention import Load
from latency.table import LatencyTable
from latency.targets import lut_model
from search_spaces.catalog import get_space
from tests.test_host_tables import fake

SPACE = get_space("mbconv")
QUIET, BUSY = Load(0.3, 2, 1), Load(9.0, 2, 1)


def made(busy: bool, ms: float = 1.0) -> LatencyTable:
    """A measured table of mbconv whose layers cost `ms` each, profiled on a busy machine or not."""
    table = LatencyTable(SPACE.name, SPACE.options(), {"source": "measured", "threads": 1, "clock": "cpu",
                                                       "busy_at_start": busy, "busy_at_end": False,
                                                       "load_at_start": (BUSY if busy else QUIET).describe()})
    for i, spec in enumerate(SPACE.all_layers()):
        table.add(spec.key, ms * (1 + i % 7))
    return table


def retimed(factor: float, calls: list[int]):  # type: ignore[no-untyped-def]
    """A quiet re-timing that reads every layer at table / factor."""
    def retime(specs, table):  # type: ignore[no-untyped-def]
        calls.append(len(specs))
        return {s.key: table.ms(s.key) / factor for s in specs}
    return retime


def never():  # type: ignore[no-untyped-def]
    raise AssertionError("must not re-profile")


def test_a_busy_table_that_agrees_with_a_quiet_retiming_is_cached(tmp_path: Path) -> None:
    calls: list[int] = []
    path = tmp_path / "mbconv.json"
    out = host_check.settle(made(True), SPACE, path, never, load=lambda: QUIET, retime=retimed(1.05, calls))
    assert calls == [host_check.CHECK_LAYERS]
    check = LatencyTable.load(path).metadata["quiet_check"]
    assert check["status"] == "passed" and check["median_ratio"] == pytest.approx(1.05)
    assert out.metadata["quiet_check"] == check


def test_a_busy_table_off_by_21_percent_is_profiled_again_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The issue's case: +21% per layer under heavy contention."""
    calls: list[int] = []
    path = tmp_path / "mbconv.json"
    made(True, 1.21).save(path)                    # what the busy profiling wrote
    redone: list[int] = []

    def redo() -> LatencyTable:
        redone.append(1)
        assert not path.exists()                   # from scratch, not a resume of the busy table
        return made(False)
    with caplog.at_level(logging.WARNING, logger="latency.host_check"):
        out = host_check.settle(made(True, 1.21), SPACE, path, redo, load=lambda: QUIET,
                                retime=retimed(1.21, calls))
    assert redone == [1] and out.ms(SPACE.all_layers()[0].key) == pytest.approx(1.0)
    saved = LatencyTable.load(path).metadata["quiet_check"]
    assert saved["status"] == "reprofiled" and saved["busy_table"]["median_ratio"] == pytest.approx(1.21)
    assert "read +21% against a quiet re-timing of 5" in caplog.text and "profiling it again" in caplog.text


def test_still_busy_it_is_pending_and_checked_on_the_next_quiet_use(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    path = tmp_path / "mbconv.json"
    with caplog.at_level(logging.WARNING, logger="latency.host_check"):
        host_check.settle(made(True), SPACE, path, never, load=lambda: BUSY, retime=retimed(1.0, calls))
    assert calls == [] and "still busy" in caplog.text and str(path) in caplog.text
    cached = LatencyTable.load(path)
    assert cached.metadata["quiet_check"]["status"] == "pending"
    # next use, still busy: used as is, still pending; then quiet: checked and passed
    host_check.recheck(cached, SPACE, path, never, load=lambda: BUSY, retime=retimed(1.0, calls))
    assert calls == [] and LatencyTable.load(path).metadata["quiet_check"]["status"] == "pending"
    host_check.recheck(LatencyTable.load(path), SPACE, path, never, load=lambda: QUIET, retime=retimed(0.97, calls))
    assert calls == [5] and LatencyTable.load(path).metadata["quiet_check"]["status"] == "passed"


def test_a_quiet_or_unrecorded_table_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mbconv.json"
    for table in (made(False), LatencyTable(SPACE.name, SPACE.options(), {"source": "measured"})):
        out = host_check.settle(table, SPACE, path, never, load=lambda: QUIET, retime=lambda s, t: never())
        assert out is table and "quiet_check" not in out.metadata and not path.exists()


def test_checked_layers_span_the_table() -> None:
    table = made(False)
    specs = host_check.check_layers(SPACE, table)
    times = sorted(table.ms(s.key) for s in SPACE.all_layers())
    assert len(specs) == 5 and table.ms(specs[0].key) == times[0] and table.ms(specs[-1].key) == times[-1]


def test_first_use_profiling_goes_through_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`--target cpu` on a new machine: profiled busy, quiet now, off by 30%: profiled once more."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NAS_AUTO_PROFILE", "1")
    fake(monkeypatch, "AMD EPYC 9999")
    profiled: list[bool] = []

    def profile(space, path, progress):  # type: ignore[no-untyped-def]
        table = made(not profiled, 1.3 if not profiled else 1.0)   # the first run was busy
        profiled.append(True)
        table.save(path)
        return table
    monkeypatch.setattr(host_tables, "_profile", profile)
    monkeypatch.setattr(host_check, "current_load", lambda threads: QUIET)
    monkeypatch.setattr(host_check, "_retime", lambda specs, table: {s.key: table.ms(s.key) / 1.3 for s in specs})
    model = lut_model("cpu", SPACE, progress=False)
    assert len(profiled) == 2
    [path] = (tmp_path / "tables").glob("*/mbconv*.json")
    cached = LatencyTable.load(path)
    assert cached.metadata["quiet_check"]["status"] == "reprofiled"
    lut_model("cpu", SPACE)   # cached and checked: no third profile
    assert len(profiled) == 2 and model is not None
    from nas.pipeline.catalogue import _made
    assert _made(cached.metadata).endswith("; re-profiled quiet (the busy one read 1.3x)")


def test_profile_command_says_when_the_machine_was_busy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`nas latency profile --out FILE` writes the user's own file, which nothing re-checks: it says so."""
    import nas.api_latency
    from nas.cli.main import main
    table = made(True)
    table.metadata.update({"device": "this cpu", "cpu": "Fake CPU", "provider": "CPUExecutionProvider",
                           "profile_seconds": 1.0})
    monkeypatch.setattr(nas.api_latency, "profile", lambda *a, **k: table)
    assert main(["latency", "profile", "--space", "mbconv", "--out", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "note: the machine was busy while profiling (load average 9.00 on 2 cores" in out
    table.metadata["busy_at_start"] = False
    assert main(["latency", "profile", "--space", "mbconv", "--out", str(tmp_path / "t.json")]) == 0
    assert "busy" not in capsys.readouterr().out
