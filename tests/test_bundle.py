"""Bundle -> standalone device script (subprocess) -> import, on the tiny MBConv space."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latency.bundle import OVERHEAD_KEY, export_bundle, import_results, load_manifest
from latency.model import LUTModel
from latency.profile import ProfileSettings
from nas.cli.main import main
from nas.core.errors import LatencyError
from search_spaces.catalog import get_space

TINY = {"resolution": 32, "width_mult": 0.25, "num_classes": 10}
FAST = ProfileSettings(warmup=1, repeats=3)


def run_script(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The device script, run the way a device runs it: `python profile_onnx.py DIR` from the bundle."""
    return subprocess.run([sys.executable, str(bundle / "profile_onnx.py"), str(bundle), "--quiet", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    export_bundle(get_space("mbconv", **TINY), out, FAST, progress=False)
    proc = run_script(out, "--rounds", "2")
    assert proc.returncode == 0, proc.stderr
    return out


def copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def test_manifest_lists_every_layer_and_the_empty_call(bundle: Path) -> None:
    space = get_space("mbconv", **TINY)
    m = load_manifest(bundle)
    keys = [lay["key"] for lay in m["layers"]]
    assert keys[0] == OVERHEAD_KEY and set(keys[1:]) == {s.key for s in space.all_layers()}
    assert m["settings"]["repeats"] == 3 and m["space_options"] == space.options()
    for lay in m["layers"]:
        assert (bundle / lay["file"]).stat().st_size > 0 and lay["input_shape"][0] == 1
    assert (bundle / "profile_onnx.py").exists()


def test_round_trip_table_equals_all_layers(bundle: Path, tmp_path: Path) -> None:
    space = get_space("mbconv", **TINY)
    session = rows(bundle / "results.jsonl")[0]
    assert session["type"] == "session" and session["onnxruntime"] and session["cpu"] and session["platform"]
    assert session["provider"] == "CPUExecutionProvider" and session["rounds"] == 2
    table, rep = import_results(bundle)
    assert set(table.entries) == {s.key for s in space.all_layers()}
    assert rep["missing"] == [] and rep["short"] == []
    m = table.metadata
    for field in ("device", "cpu", "runtime_version", "provider", "threads", "opt_level", "batch", "warmup",
                  "repeats", "rounds", "statistic", "spread", "date", "call_overhead_ms", "bundle_id"):
        assert m[field] is not None, field
    e = next(iter(table.entries.values()))
    assert e["n"] == 4 and e["ms"] == pytest.approx(max(0.0, e["raw_ms"] - m["call_overhead_ms"]))
    assert e["iqr_ms"] >= 0
    model = LUTModel(space, table.__class__.load(table.save(tmp_path / "t.json")))
    assert model.predict(space.sample(np.random.default_rng(0))) > 0


def test_cli_import_and_bundle_reuse(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["latency", "import", str(bundle), "--out", str(tmp_path / "t.json"), "--device", "phone"]) == 0
    assert capsys.readouterr().err == ""   # same space definition, same runtime: no warnings
    assert json.loads((tmp_path / "t.json").read_text())["metadata"]["device"] == "phone"
    with pytest.raises(LatencyError, match="already holds a bundle"):
        export_bundle(get_space("mbconv", **{**TINY, "width_mult": 0.5}), bundle, FAST, progress=False)


def test_resume_after_interrupted_write(bundle: Path, tmp_path: Path) -> None:
    b = copy(bundle, tmp_path)
    lines = (b / "results.jsonl").read_text().splitlines()
    keep = lines[: len(lines) // 2]
    (b / "results.jsonl").write_text("\n".join(keep) + "\n" + lines[len(keep)][:25])   # cut mid-line
    proc = run_script(b, "--rounds", "2")
    assert proc.returncode == 0, proc.stderr
    new = rows(b / "results.jsonl")
    assert sum(r["type"] == "session" for r in new) == 2
    pairs = [(r["key"], r["round"]) for r in new if r["type"] == "layer"]
    assert len(pairs) == len(set(pairs)) == 2 * len(load_manifest(b)["layers"])
    assert [json.dumps(r, separators=(",", ":")) for r in new[:len(keep)]] == keep   # old rows untouched
    table, _ = import_results(b)
    assert table.metadata["sessions"] == 2
    proc = run_script(b, "--rounds", "2", "--threads", "2")
    assert proc.returncode == 2 and "threads: 1 there, 2 now" in proc.stderr


@pytest.mark.parametrize("edit,match", [
    (lambda ls: ls[:3] + ["{oops"] + ls[3:], "line 4 is corrupt"),
    (lambda ls: ls + [ls[2]], "duplicate result"),
    (lambda ls: ls[:2] + [ls[2].replace('"round":', '"key":"conv(x=1)@1","round":', 1)] + ls[3:], "not in the bundle"),
    (lambda ls: [ls[0].replace('"bundle_id":"', '"bundle_id":"x', 1)] + ls[1:], "another bundle"),
    (lambda ls: ls + [ls[0].replace('"threads":1', '"threads":4')], "other settings"),
    (lambda ls: ls[1:], "before any session"),
    (lambda ls: ls[:2] + [ls[2].replace('"times_ms":[', '"times_ms":[-1,', 1)] + ls[3:], "positive finite"),
])
def test_corrupt_or_duplicate_rows_rejected(bundle: Path, tmp_path: Path, edit, match: str) -> None:
    b = copy(bundle, tmp_path)
    lines = (b / "results.jsonl").read_text().splitlines()
    (b / "results.jsonl").write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(LatencyError, match=match):
        import_results(b)


def test_trailing_blank_line_is_accepted(bundle: Path, tmp_path: Path) -> None:
    """An editor or a copy adds a blank last line: the same table as without it (issue 13)."""
    b = copy(bundle, tmp_path)
    plain, _ = import_results(b)
    with (b / "results.jsonl").open("a") as fh:
        fh.write("\n")
    table, _ = import_results(b)
    assert table.entries == plain.entries


def test_missing_keys_reported(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    b = copy(bundle, tmp_path)
    gone = load_manifest(b)["layers"][5]["key"]
    kept = [json.dumps(r) for r in rows(b / "results.jsonl") if r.get("key") != gone]
    (b / "results.jsonl").write_text("\n".join(kept) + "\n")
    with pytest.raises(LatencyError, match=r"1 of 40 layers have no result: .*not measured yet"):
        import_results(b)
    table, rep = import_results(b, allow_missing=True)
    assert rep["missing"] == [gone] and gone not in table.entries and table.metadata["missing"] == [gone]
    assert main(["latency", "import", str(b), "--out", str(tmp_path / "t.json")]) == 1
    assert "have no result" in capsys.readouterr().err


def test_timeout_records_failure_and_import_names_it(bundle: Path, tmp_path: Path) -> None:
    b = copy(bundle, tmp_path)
    (b / "results.jsonl").unlink()
    m = load_manifest(b)
    m["layers"] = m["layers"][:3]     # a small bundle: the worker process restarts after each timeout
    (b / "manifest.json").write_text(json.dumps(m))
    proc = run_script(b, "--rounds", "1", "--timeout-s", "0.001")
    assert proc.returncode == 1
    res = [r for r in rows(b / "results.jsonl") if r["type"] == "layer"]
    assert len(res) == 3 and all(r["status"] == "timeout" for r in res)
    with pytest.raises(LatencyError, match="timeout: no result within --timeout-s 0.001"):
        import_results(b)
    assert run_script(b, "--rounds", "1", "--timeout-s", "0.001").returncode == 1   # skipped, not retried
    assert len(rows(b / "results.jsonl")) == 4
    proc = run_script(b, "--rounds", "1", "--timeout-s", "60", "--retry-failed")
    assert proc.returncode == 0, proc.stderr
    table, rep = import_results(b, allow_missing=True)
    assert len(table.entries) == 2 and rep["failed"] == {}


def test_unavailable_provider_fails_cleanly(bundle: Path) -> None:
    proc = run_script(bundle, "--provider", "CUDAExecutionProvider")
    assert proc.returncode == 2
    assert "'CUDAExecutionProvider' is not available" in proc.stderr and "CPUExecutionProvider" in proc.stderr
    from nas.core.errors import UsageError
    from latency.onnx_io import session
    with pytest.raises(UsageError, match="available: .*CPUExecutionProvider"):
        session(bundle / load_manifest(bundle)["layers"][0]["file"], provider="CUDAExecutionProvider")
