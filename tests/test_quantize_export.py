"""`nas train --export-int8` and `nas export --precision int8`: a QDQ ONNX file that runs in onnxruntime,
with the held-out accuracy before and after quantization; bad input is one line, exit 2, nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cli.main import main

ARCH = "k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3"
SMALL = ["-o", "resolution=32", "-o", "width_mult=0.25"]


def nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A small mbconv net trained 4 epochs on the synthetic set, with its int8 export."""
    tmp = tmp_path_factory.mktemp("int8")
    (tmp / "best.json").write_text(json.dumps({"space": "mbconv", "arch": ARCH, "space_options": {"resolution": 224}}))
    out = tmp / "run"
    code = main(["train", str(tmp / "best.json"), *SMALL, "--dataset", "synthetic:300", "--epochs", "4",
                 "--batch-size", "20", "--seed", "3", "--out", str(out), "--quiet", "--json", "--export-int8"])
    assert code == 0
    return out, json.loads((out / "result.json").read_text())


@pytest.mark.slow
def test_train_export_int8_reports_accuracy_before_and_after(trained: tuple[Path, dict],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import onnx
    import onnxruntime as ort
    out, res = trained
    q = out / "model.int8.onnx"
    assert q.exists() and q.stat().st_size < 0.6 * (out / "model.onnx").stat().st_size   # int8 weights
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    sess = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"input": np.zeros((3, 3, 32, 32), np.float32)})[0].shape == (3, 10)
    # the same held-out split as training (split seed = --seed): the float file scores what training reported
    code, text, err = nas(capsys, "export", str(out / "model.pt"), "--precision", "int8", "--format", "onnx",
                          "--dataset", "synthetic:300", "--seed", "3", "--out", str(out / "again.onnx"), "--json")
    assert code == 0, err
    info = json.loads(text)
    n = info["heldout_images"]
    assert n == 75 and abs(info["accuracy_float"] - res["accuracy"]) <= 1.5 / n   # synthetic:300 holds out 75
    assert info["accuracy_float"] > 0.8 and abs(info["accuracy_drop"]) <= 0.05 and info["agreement"] > 0.9
    assert info["quantization"]["weights"].endswith("per channel") and info["float_ops"] == []


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small mbconv .pt with random weights (as 'nas export --format torch' writes it)."""
    tmp = tmp_path_factory.mktemp("int8pt")
    (tmp / "best.json").write_text(json.dumps({"space": "mbconv", "arch": ARCH, "space_options":
                                               {"resolution": 32, "width_mult": 0.25, "num_classes": 10}}))
    assert main(["export", str(tmp / "best.json"), "--format", "torch", "--out", str(tmp / "model.pt")]) == 0
    return tmp / "model.pt"


def test_untrained_int8_export_runs(untrained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text, err = nas(capsys, "export", str(untrained), "--precision", "int8", "--format", "onnx",
                          "--out", str(tmp_path), "--json")
    assert code == 0, err
    info = json.loads(text)
    assert info["out"] == str(tmp_path / "model.onnx") and info["dataset"] == "digits" and info["heldout_images"] == 359
    assert 0 <= info["accuracy_int8"] <= 1 and info["int8_bytes"] < info["float_bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]   # no temporary file left


@pytest.mark.parametrize("argv, message", [
    (["--precision", "int4", "--format", "onnx"], "unknown precision 'int4'; valid: float32, int8"),
    (["--precision", "int8", "--format", "torch"], "--precision int8 writes ONNX only"),
    (["--precision", "int8", "--format", "onnx", "--dataset", "nope"], "unknown dataset 'nope'"),
    (["--format", "onnx", "--dataset", "digits"], "--dataset applies to --precision int8 only"),
])
def test_bad_int8_export_one_line_exit_2(untrained: Path, tmp_path: Path, argv: list[str], message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.onnx"
    code, _, err = nas(capsys, "export", str(untrained), *argv, "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_int8_export_refuses_images_the_net_cannot_take(untrained: Path, tmp_path: Path) -> None:
    from latency.quantize import Calibration
    from nas.core.errors import UsageError
    from nas.deploy.export import load_torch
    from nas.deploy.quantized import export_int8
    space, arch, model = load_torch(untrained)
    gray = Calibration("gray", np.zeros((4, 1, 32, 32), np.float32))
    with pytest.raises(UsageError, match="channels must match"):
        export_int8(space, arch, tmp_path / "q.onnx", gray, np.zeros((2, 3, 32, 32), np.float32), np.zeros(2, int),
                    state=model.state_dict())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--quantize-top", "3"], "--quantize-top re-trains and quantizes finalists: it needs --evaluator train"),
    (["--quantize-top", "3", "--evaluator", "predictor"],
     "it needs --evaluator train, not 'predictor' (a predictor score comes from no trained weights"),
    (["--quantize-top", "-1", "--evaluator", "train"], "--quantize-top must be a whole number >= 0, got -1"),
])
def test_quantize_top_bad_input(tmp_path: Path, argv: list[str], message: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = nas(capsys, "search", "--space", "mbconv", "--target", "cpu", "--trials", "2",
                       "--out", str(tmp_path / "run"), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_quantize_top_reports_the_best_after_int8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The finalists are re-trained (same seed: the same accuracy as their trial) and re-scored in int8;
    best.json holds the one with the highest int8 accuracy."""
    from latency.devices.pixel1 import build_table
    from search_spaces.catalog import get_space
    table = build_table(get_space("mbconv", resolution=32, width_mult=0.25)).save(tmp_path / "mb.json")
    out = tmp_path / "run"
    code, _, err = nas(capsys, "search", "--space", "mbconv", *SMALL, "--target", str(table), "--latency-ms", "100",
                       "--evaluator", "train", "--dataset", "synthetic:300", "--epochs", "1", "--trials", "4",
                       "--quantize-top", "2", "--out", str(out))
    assert code == 0, err
    best = json.loads((out / "best.json").read_text())
    rows = best["quantized_top"]
    assert len(rows) == 2 and rows[0]["accuracy_int8"] >= rows[1]["accuracy_int8"]
    assert best["trial_number"] == rows[0]["trial"] and best["arch"] == rows[0]["arch"]
    assert all(abs(r["accuracy"] - r["score"]) < 0.02 for r in rows)   # re-training reproduces the trial
