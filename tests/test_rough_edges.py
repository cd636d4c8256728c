"""The rough edges of issue 13: bad input of every kind gives one clear line and the right exit code,
never a traceback, a silent guess or lost work. Each case failed on the code before the fix."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from latency.targets import TABLES
from nas.cli.main import main

CPU_MBCONV = TABLES / "xeon-2.8ghz" / "mbconv.json"
CONFIG = {"space": "mbconv", "space_options": {}, "targets": ["pixel1"], "latency_ms": [80.0],
          "strategy": "evolution", "strategy_options": {}, "evaluator": "zero-cost", "evaluator_options": {},
          "seed": 0, "dataset": None, "epochs": None, "batch_size": None, "trials": 3, "storage": None,
          "study": "s1"}


def nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _table(path: Path, edit: Callable[[str], str]) -> Path:
    return _write(path, edit(CPU_MBCONV.read_text()))


def _duplicate_first_entry(text: str) -> str:
    """The shipped table with its first entry given twice, the second time at 1000 ms."""
    data = json.loads(text)
    key, entry = next(iter(data["entries"].items()))
    body = json.dumps(data, indent=1)
    dup = json.dumps({key: {**entry, "ms": 1000.0}})[1:-1]
    return body.replace('"entries": {', '"entries": {' + dup + ",", 1)


def _ms_true(text: str) -> str:
    data = json.loads(text)
    next(iter(data["entries"].values()))["ms"] = True
    return json.dumps(data)


# Each case: files to make in tmp_path (name -> maker), argv ({tmp} is tmp_path), exit code, text in stderr.
CASES = {
    "resume-truncated-config": ({"run/config.json": lambda p: _write(p, json.dumps(CONFIG)[:40])},
                                ["search", "--resume", "{tmp}/run"], 2, "cannot read"),
    "resume-ill-typed-config": ({"run/config.json": lambda p: _write(p, json.dumps({**CONFIG, "trials": "abc"}))},
                                ["search", "--resume", "{tmp}/run"], 2, "'trials' must be int, got 'abc'"),
    "resume-list-config": ({"run/config.json": lambda p: _write(p, "[1, 2]")},
                           ["search", "--resume", "{tmp}/run"], 2, "not a search config"),
    "resume-list-options": ({"run/config.json": lambda p: _write(p, json.dumps({**CONFIG, "space_options": [1]}))},
                            ["search", "--resume", "{tmp}/run"], 2, "'space_options' must be dict"),
    "resume-other-study": ({"run/config.json": lambda p: _write(p, json.dumps(CONFIG))},
                           ["search", "--resume", "{tmp}/run", "--study", "nosuch"], 2, "names another"),
    "resume-other-width": ({"run/config.json": lambda p: _write(p, json.dumps(CONFIG))},
                           ["search", "--resume", "{tmp}/run", "-o", "width_mult=0.75"], 2,
                           "other settings (space_options"),
    "table-duplicate-key": ({"dup.json": lambda p: _table(p, _duplicate_first_entry)},
                            ["show", "--space", "mbconv", "--arch", "single-path-nas", "--target", "{tmp}/dup.json"],
                            1, "appears twice"),
    "table-ms-true": ({"t.json": lambda p: _table(p, _ms_true)},
                      ["show", "--space", "mbconv", "--arch", "single-path-nas", "--target", "{tmp}/t.json"],
                      1, "must be a finite non-negative number, got True"),
    "huge-resolution": ({}, ["show", "--space", "mbconv", "-o", "resolution=100000", "--arch", "single-path-nas"],
                        2, "resolution 100000 outside [32, 1024]"),
    "huge-hytra-resolution": ({}, ["show", "--space", "hytra", "-o", "resolution=100000", "--arch", "bossnet-t0"],
                              2, "multiple of 32 (the 1/32 scale), at most 1024"),
    "fractional-resolution": ({}, ["show", "--space", "mbconv", "-o", "resolution=224.5", "--arch", "single-path-nas"],
                              2, "resolution must be a whole number, got 224.5"),
    "export-null-options": ({"best.json": lambda p: _write(p, json.dumps(
        {"space": "mbconv", "space_options": None, "arch": "single-path-nas"}))},
        ["export", "{tmp}/best.json", "--format", "json", "--out", "{tmp}/x.json"], 2, "'space_options' must be"),
    "export-list-options": ({"best.json": lambda p: _write(p, json.dumps(
        {"space": "mbconv", "space_options": [224], "arch": "single-path-nas"}))},
        ["export", "{tmp}/best.json", "--format", "json", "--out", "{tmp}/x.json"], 2, "'space_options' must be"),
    "profile-unwritable": ({"afile": lambda p: _write(p, "")},
                           ["latency", "profile", "--space", "mbconv", "--out", "{tmp}/afile/t.json", "--quiet"],
                           1, "--out {tmp}/afile/t.json: {tmp}/afile is a file, not a folder"),
    "import-unwritable": ({"afile": lambda p: _write(p, "")},
                          ["latency", "import", "{tmp}/nobundle", "--out", "{tmp}/afile/t.json"], 1, "--out"),
    "save-correction-unwritable": ({"afile": lambda p: _write(p, "")},
                                   ["latency", "validate", "--space", "mbconv", "--target", "cpu", "--fit-correction",
                                    "--save-correction", "{tmp}/afile/c.json", "--quiet"], 1, "--save-correction"),
    "deep-arch-json": ({}, ["show", "--space", "mbconv", "--arch",
                            '{"space": "mbconv", "genes": ' + "[" * 30000 + "]" * 30000 + "}"],
                       2, "nested too deeply"),
    "out-is-a-file": ({"afile": lambda p: _write(p, "")},
                      ["search", "--out", "{tmp}/afile", "--trials", "1", "--quiet"], 2, "--out {tmp}/afile is a file"),
    "bad-storage": ({}, ["search", "--storage", "foo://bar", "--trials", "1", "--quiet"], 2,
                    "valid forms: sqlite:///PATH"),
    "misspelt-preset": ({}, ["show", "--space", "mbconv", "--arch", "single-path-nass"], 2,
                        "mbconv presets: mobilenetv2-like, proxyless-mobile-k5, single-path-nas"),
    "other-space-preset": ({}, ["show", "--space", "nasnet", "--arch", "single-path-nas"], 2, "nasnet presets: nasnet-a"),
    "negative-seed": ({}, ["search", "--seed", "-1", "--trials", "1", "--quiet"], 2, "--seed must be an integer"),
    "huge-seed": ({}, ["search", "--seed", str(2 ** 70), "--trials", "1", "--quiet"], 2, "--seed must be an integer"),
    "zero-byte-db": ({"run/trials.db": lambda p: _write(p, "")},
                     ["search", "--out", "{tmp}/run", "--trials", "1", "--quiet"], 1, "is empty (zero bytes)"),
    "foreign-db": ({"run/trials.db": lambda p: _write(p, "PK\x03\x04 a zip file, not SQLite")},
                   ["search", "--out", "{tmp}/run", "--trials", "1", "--quiet"], 1, "not a SQLite database"),
    "strategy-option-type": ({}, ["search", "--strategy-option", "population=x", "--trials", "1", "--quiet"], 2,
                             "population must be a number (default auto: trials/5, 10 to 50), got 'x'"),
    "darts-target-without-table": ({}, ["search", "--space", "nasnet", "-o", "variant=darts", "--strategy", "darts",
                                        "--target", "xeon-2.8ghz", "--out", "{tmp}/d", "--quiet"], 1,
                                   "make one for these with 'nas latency profile --space nasnet -o variant=darts"),
    "other-width-without-table": ({}, ["search", "-o", "width_mult=0.5", "--target", "xeon-2.8ghz", "--quiet"], 1,
                                  "(width_mult: 1.0 there, 0.5 here)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files, argv, code, expected = CASES[name]
    for rel, make in files.items():
        make(tmp_path / rel)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    got, _, err = nas(capsys, *(a.replace("{tmp}", str(tmp_path)) for a in argv))
    assert got == code, err
    assert expected.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    # nothing the user had was changed (e.g. config.json not repointed to another study)
    assert {p: p.read_bytes() for p in before} == before


def test_table_path_without_json_suffix_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = tmp_path / "mytable"
    plain.write_text(CPU_MBCONV.read_text())
    code, out, err = nas(capsys, "show", "--space", "mbconv", "--arch", "single-path-nas", "--target", str(plain),
                         "--target", "cpu", "--json")
    assert code == 0, err
    lat = json.loads(out)["latency_ms"]
    assert lat[str(plain)] == pytest.approx(lat["cpu"])


def test_junk_keys_are_dropped_and_oversized_tables_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import latency.table
    from latency.model import LUTModel
    from latency.table import LatencyTable
    from nas.core.errors import LatencyError
    from search_spaces.catalog import get_space
    data = json.loads(CPU_MBCONV.read_text())
    data["entries"].update({f"junk{i}": {"ms": 1.0} for i in range(5000)})
    path = tmp_path / "junk.json"
    path.write_text(json.dumps(data))
    space = get_space("mbconv")
    arch = space.parse_any("single-path-nas")
    with caplog.at_level(logging.WARNING):
        model = LUTModel(space, LatencyTable.load(path))
    assert "ignoring 5000 entries" in caplog.text and len(model.table.entries) == 47
    reference = LUTModel(space, LatencyTable.load(CPU_MBCONV)).predict(arch)
    assert model.predict(arch) == pytest.approx(reference)
    monkeypatch.setattr(latency.table, "MAX_TABLE_BYTES", 100_000)
    with pytest.raises(LatencyError, match="over the 0 MB limit"):
        LatencyTable.load(path)


def test_long_arch_is_not_echoed_back(capsys: pytest.CaptureFixture[str]) -> None:
    arch = "k3e3 | " * 150_000 + "k9"   # ~1 MB
    code, _, err = nas(capsys, "show", "--space", "mbconv", "--arch", arch)
    assert code == 2 and len(err) < 1000 and "characters in all" in err


def test_summary_names_the_proxy_and_report_names_present_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "s"
    code, text, _ = nas(capsys, "search", "--space", "mbconv", "--target", "cpu", "--trials", "2", "--out", str(out),
                        "--quiet")
    assert code == 0 and "(naswot proxy)" in text   # the summary names what "score" is
    code, _, err = nas(capsys, "report", str(out), "--x", "bogus")
    assert code == 2 and "--x 'bogus'" in err and "metrics present: latency_ms" in err
    assert not (out / "pareto.png").exists()


def test_jsonl_garbage_line_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from nas.core.arch import Arch
    from nas.store.trial import JsonlStore, Trial
    store = JsonlStore(tmp_path / "t.jsonl")
    for n in range(2):
        store.append(Trial(n, Arch("mbconv", ("k3e3",) * 21), {"score": float(n)}, "complete", None, 0.0, 0))
    lines = store.path.read_text().splitlines()
    store.path.write_text("\n".join([lines[0], "garbage{", lines[1]]) + "\n")
    with caplog.at_level(logging.WARNING):
        got = store.trials()
    assert [t.number for t in got] == [0, 1]
    assert "t.jsonl line 2 is not a trial" in caplog.text


def test_half_profiled_table_is_marked_incomplete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(CPU_MBCONV.read_text())
    data["entries"] = dict(list(data["entries"].items())[:40])
    path = tmp_path / "half.json"
    path.write_text(json.dumps(data))
    code, out, _ = nas(capsys, "latency", "show", str(path))
    assert code == 0 and "INCOMPLETE: 7 of 47 layers missing" in out
    code, out, _ = nas(capsys, "latency", "show", str(CPU_MBCONV))
    assert code == 0 and "INCOMPLETE" not in out


def test_sigterm_during_profile_says_layers_are_kept(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    from nas.cli.main import Terminated
    api_latency = importlib.import_module("nas.api_latency")

    def stopped(*args: object, **kwargs: object) -> None:
        raise Terminated()
    monkeypatch.setattr(api_latency, "profile", stopped)
    code, _, err = nas(capsys, "latency", "profile", "--space", "mbconv", "--out", str(tmp_path / "t.json"))
    assert code == 143 and "layers measured so far are kept" in err and "trials" not in err


def test_closed_pipe_gives_no_traceback() -> None:
    """`nas list targets | head -0`: the reader is gone before nas writes."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from nas.cli.main import main; sys.exit(main())",
                             "list", "targets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode in (0, 141)


def test_list_is_a_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    from nas.strategies.catalog import STRATEGIES
    code, out, _ = nas(capsys, "list", "strategies")
    lines = out.strip().splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == STRATEGIES.names()
    evolution = next(line for line in lines if line.startswith("evolution"))
    assert "[default]" in evolution and "population='auto'" in evolution
    code, out, _ = nas(capsys, "list")
    assert code == 0 and all(f"{s}:" in out for s in ("spaces", "strategies", "evaluators", "targets"))
    assert "proxy=naswot" in out and "single-path-nas" in out
    code, out, _ = nas(capsys, "list", "evaluators", "--verbose", "--json")
    zero_cost = next(r for r in json.loads(out) if r["name"] == "zero-cost")
    assert zero_cost["default"] and zero_cost["options"]["proxy"] == "naswot"


def test_search_help_states_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: evolution" in text and "(default: zero-cost, the naswot proxy" in text


def test_optuna_trials_carry_numeric_latency_and_constraints(tmp_path: Path) -> None:
    """optuna-dashboard sorts numeric user attrs and marks trials feasible from system attr
    `constraints` (<= 0 feasible), as Optuna's samplers record it."""
    import optuna

    from nas.core.arch import Arch
    from nas.store.study import open_store
    from nas.store.trial import Trial
    url = f"sqlite:///{tmp_path / 't.db'}"
    store = open_store(url, "s")
    store.set_constraints([("latency_ms.cpu", 10.0, True)])
    arch = Arch("mbconv", ("k3e3",) * 21)
    for n, ms in enumerate((8.5, 12.0)):
        store.append(Trial(n, arch, {"score": 1.0, "latency_ms": ms, "latency_ms.cpu": ms}, "complete", None, 0.0, 0))
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t.user_attrs["latency_ms.cpu"] for t in trials] == [8.5, 12.0]
    assert [t.system_attrs["constraints"] for t in trials] == [[-1.5], [2.0]]


def test_ray_address_with_nothing_listening_fails_fast() -> None:
    import socket
    import time

    from nas.core.errors import NasError
    from nas.pipeline.ray_runner import RayExecutor
    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(NasError, match=f"cannot connect to the Ray cluster at --address 127.0.0.1:{port}"):
        RayExecutor(lambda arch: {}, address=f"127.0.0.1:{port}")   # type: ignore[arg-type]
    assert time.perf_counter() - t0 < 30


def test_ray_address_with_nothing_listening_writes_nothing(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    assert main(["search", "--space", "mbconv", "--target", "xeon-2.8ghz", "--trials", "2", "--runner", "ray",
                 "--address", f"127.0.0.1:{port}", "--evaluator-option", "proxy=params", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--address 127.0.0.1:{port}" in err[0]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.ray
def test_sigterm_during_ray_search_exits_143(tmp_path: Path) -> None:
    """ray.init installs a SIGTERM handler that dumped a stack and aborted (exit 134 here)."""
    import os
    import signal
    import sqlite3
    import time
    pytest.importorskip("ray")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from nas.cli.main import main; sys.exit(main())",
                             "search", "--runner", "ray", "--workers", "2", "--trials", "400", "--quiet",
                             "--out", str(tmp_path / "run")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db, deadline = tmp_path / "run" / "trials.db", time.time() + 240
    while time.time() < deadline and proc.poll() is None:   # until a trial finished on Ray
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:   # never creates it
                if con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]:
                    break
        except sqlite3.Error:
            pass
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err.decode()[-2000:]
    assert "SIGTERM received" not in err.decode()
