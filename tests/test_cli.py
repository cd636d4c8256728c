"""End to end through the CLI: search -> best.json -> export (ONNX equal to torch), and bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from nas.cli.main import main
from nas.deploy.export import load_torch
from latency.onnx_io import run, session
from nas.pipeline.report import load_search


def nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search")
    assert main(["search", "--space", "mbconv", "--target", "cpu", "--latency-ms", "10", "--trials", "8",
                 "--seed", "1", "--out", str(out), "--quiet"]) == 0
    return out


def test_search_writes_best_json(result: Path) -> None:
    best = json.loads((result / "best.json").read_text())
    for key in ("space", "arch", "latency_ms", "metrics", "space_options"):
        assert key in best
    assert best["latency_ms"] <= 10
    assert len(load_search(result).trials) == 8 and (result / "trials.db").exists()


def test_search_resume_adds_only_missing_trials(result: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = load_search(result).trials
    code, _, _ = nas(capsys, "search", "--space", "mbconv", "--target", "cpu", "--latency-ms", "10",
                     "--trials", "10", "--seed", "1", "--out", str(result), "--quiet")
    after = load_search(result).trials
    assert code == 0 and after[:8] == before and len(after) == 10
    code, _, err = nas(capsys, "search", "--space", "mbconv", "--target", "cpu", "--trials", "10", "--seed", "2",
                       "--out", str(result), "--quiet")
    assert code == 2 and "other settings" in err


def test_export_onnx_matches_torch(result: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx_path, pt_path = tmp_path / "net.onnx", tmp_path / "net.pt"
    assert nas(capsys, "export", str(result / "best.json"), "--format", "onnx", "--out", str(onnx_path))[0] == 0
    assert nas(capsys, "export", str(result / "best.json"), "--format", "torch", "--out", str(pt_path))[0] == 0
    onnx.checker.check_model(str(onnx_path))
    space, arch, model = load_torch(pt_path)
    x = torch.randn(2, *space.input_shape)
    sess = session(onnx_path)
    with torch.no_grad():
        ref = model(x[:1]).numpy()
    np.testing.assert_allclose(run(sess, x[:1].numpy()), ref, atol=1e-4)
    assert space.format(arch) == json.loads((result / "best.json").read_text())["arch"]


def test_predict_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = nas(capsys, "latency", "predict", "--space", "mbconv", "--target", "cpu",
                       "--arch", "single-path-nas", "--json")
    assert code == 0 and json.loads(out)["targets"]["cpu"]["latency_ms"] > 0
    code, out, _ = nas(capsys, "show", "--space", "mbconv", "--arch", "single-path-nas", "--json")
    info = json.loads(out)
    assert code == 0 and info["params_m"] == pytest.approx(4.42, abs=0.01) and info["macs_m"] > 100


@pytest.mark.parametrize("argv,code,needle", [
    (["search", "--space", "nope", "--target", "cpu"], 2, "valid spaces: "),
    (["search", "--target", "nope"], 2, "valid targets: "),
    (["search", "--target", "cpu", "--strategy", "nope"], 2, "valid strategies: "),
    (["search", "--target", "cpu", "--latency-ms", "0.5"], 1, "impossible"),
    (["search", "--target", "cpu", "--trials", "0"], 2, "--trials"),
    (["latency", "predict", "--space", "mbconv", "--target", "cpu", "--arch", "k3e3 | k9e9"], 2, "6 stages"),
    (["show", "--space", "mbconv", "--arch", "{\"space\": \"mbconv\", \"genes\": [\"k3e3\"]}"], 2, "21 genes"),
    (["export", "missing.json", "--format", "onnx", "--out", "x.onnx"], 2, "cannot read"),
    (["search", "--target", "cpu", "-o", "width"], 2, "key=value"),
    (["search", "--target", "cpu", "--epochs", "3"], 2, "--epochs has no effect with evaluator 'zero-cost'"),
    (["search", "--target", "cpu", "--epochs", "0", "--evaluator", "train"], 2, "--epochs must be a positive"),
    (["search", "--target", "cpu", "--device", "tpu"], 2, "valid: cpu, cuda"),
    (["search", "--target", "cpu", "--torch-threads", "0"], 2, "--torch-threads"),
])
def test_bad_input_one_clear_line(capsys: pytest.CaptureFixture[str], argv: list[str], code: int,
                                  needle: str) -> None:
    got, out, err = nas(capsys, *argv)
    assert got == code
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_table_file_is_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "t.json"
    bad.write_text("{")
    code, _, err = nas(capsys, "latency", "predict", "--space", "mbconv", "--target", str(bad), "--arch",
                       "single-path-nas")
    assert code == 1 and "corrupt" in err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = nas(capsys, "list", "targets", "--json")
    assert code == 0 and any(r["target"] == "cpu" and r["source"] == "measured" for r in json.loads(out))


def test_training_flags_reach_the_train_evaluator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    table = tmp_path / "t.json"
    from latency.profile import ProfileSettings, profile_space
    from search_spaces.catalog import get_space
    profile_space(get_space("mbconv", resolution=32, width_mult=0.25), table, ProfileSettings(warmup=0, repeats=1),
                  progress=False)
    code, _, err = nas(capsys, "search", "--space", "mbconv", "-o", "resolution=32", "-o", "width_mult=0.25",
                       "--target", str(table), "--evaluator", "train", "--evaluator-option", "val_samples=16",
                       "--dataset", "synthetic:32", "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                       "--torch-threads", "1", "--strategy", "random", "--trials", "2", "--out", str(out), "--quiet")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["dataset"], cfg["epochs"], cfg["batch_size"]) == ("synthetic:32", 1, 16)
    best = json.loads((out / "best.json").read_text())
    assert 0 <= best["metrics"]["accuracy"] <= 1 and torch.get_num_threads() == 1
    code, _, err = nas(capsys, "search", "--resume", str(out), "--epochs", "2", "--quiet")
    assert code == 2 and "epochs" in err         # a resumed search keeps its training settings
