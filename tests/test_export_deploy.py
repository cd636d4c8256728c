"""Export for deployment: dynamic batch (ONNX equal to torch at batch 1 and 8), fixed --batch, --opset,
TorchScript, one-call loading, normal file permissions, --out as a folder."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nas.cli.main import main
from nas.core.errors import UsageError
from nas.deploy.export import export, load_model

ARCH = "k3e6 skip skip skip | k5e3 skip skip skip | k3e3 k5e6 skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3"


@pytest.fixture
def best(tmp_path: Path) -> Path:
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"space": "mbconv", "arch": ARCH,
                                "space_options": {"resolution": 32, "width_mult": 0.25, "num_classes": 10}}))
    return path


def _onnx_vs_torch(onnx_path: Path, model: torch.nn.Module, batch: int) -> float:
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert got.shape == (batch, 10)
    return float(np.max(np.abs(got - ref)))


def test_onnx_has_a_dynamic_batch_and_equals_torch_at_1_and_8(best: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(best), "--format", "torch", "--seed", "5", "--out", str(tmp_path / "net.pt")]) == 0
    assert main(["export", str(tmp_path / "net.pt"), "--format", "onnx", "--out", str(tmp_path / "net.onnx"),
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 1)[1])   # first line is the torch export's
    assert info["batch"] == "dynamic" and set(info["max_abs_diff_by_batch"]) == {"1", "8"}
    dim = onnx.load(str(tmp_path / "net.onnx")).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"
    model = load_model(tmp_path / "net.pt")           # the one documented call: an nn.Module, eval mode
    assert isinstance(model, torch.nn.Module) and not model.training
    for b in (1, 8):
        assert _onnx_vs_torch(tmp_path / "net.onnx", model, b) < 1e-4
    # the .pt kept its seed-5 weights: a seed-0 net gives other outputs
    assert main(["export", str(best), "--format", "torch", "--out", str(tmp_path / "seed0.pt")]) == 0
    assert _onnx_vs_torch(tmp_path / "net.onnx", load_model(tmp_path / "seed0.pt"), 2) > 1e-3


def test_fixed_batch_and_opset(best: Path, tmp_path: Path) -> None:
    info = export(best, "onnx", tmp_path / "b2.onnx", batch=2, opset=13)
    m = onnx.load(str(tmp_path / "b2.onnx"))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert {o.version for o in m.opset_import if o.domain in ("", "ai.onnx")} == {13}
    assert info["batch"] == 2 and set(info["max_abs_diff_by_batch"]) == {2}
    sess = ort.InferenceSession(str(tmp_path / "b2.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):
        sess.run(None, {"input": np.zeros((8, 3, 32, 32), np.float32)})
    with pytest.raises(UsageError, match="opset 99 is not supported; valid: 7.."):
        export(best, "onnx", tmp_path / "x.onnx", opset=99)
    with pytest.raises(UsageError, match="batch must be a positive number"):
        export(best, "onnx", tmp_path / "x.onnx", batch=0)


def test_torchscript_loads_without_nas(best: Path, tmp_path: Path) -> None:
    export(best, "torch", tmp_path / "net.pt", seed=2)
    info = export(tmp_path / "net.pt", "torchscript", tmp_path / "net.ts")
    assert info["max_abs_diff_vs_torch"] < 1e-5
    scripted = torch.jit.load(str(tmp_path / "net.ts"))
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), load_model(tmp_path / "net.pt")(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_normal_permissions(best: Path, tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        for fmt, name in (("onnx", "a.onnx"), ("torch", "a.pt"), ("torchscript", "a.ts"), ("json", "a.json")):
            export(best, fmt, tmp_path / name)
            assert (tmp_path / name).stat().st_mode & 0o777 == mode, fmt
    finally:
        os.umask(old)


def test_out_folder_writes_inside_and_bad_files_are_usage_errors(best: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    assert main(["export", str(best), "--format", "onnx", "--out", str(folder)]) == 0
    assert "deploy/model.onnx" in capsys.readouterr().out and (folder / "model.onnx").is_file()
    assert main(["export", str(best), "--format", "torch", "--out", str(folder)]) == 0
    assert (folder / "model.pt").is_file()
    assert main(["export", str(best), "--format", "onnx", "--out", str(tmp_path / "missing") + "/"]) == 2
    assert "is not an existing folder" in capsys.readouterr().err and not (tmp_path / "missing").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["export", str(tmp_path / "junk.pt"), "--format", "onnx", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "is not a .pt file written by 'nas export --format torch'" in err and "Traceback" not in err
    assert main(["export", str(best), "--format", "tflite", "--out", str(folder)]) == 2
    assert "valid formats: onnx, torch, torchscript, json" in capsys.readouterr().err


SMALL_OPTIONS = {"mbconv": {"resolution": 32, "width_mult": 0.35}, "nasnet": {"channels": 8, "cells": 1},
                 "hytra": {"resolution": 32, "width": 16}, "vit_resnas": {"resolution": 32, "patch": 4}}


@pytest.mark.parametrize("name", sorted(SMALL_OPTIONS))
def test_every_space_exports_a_dynamic_batch(name: str, tmp_path: Path) -> None:
    from nas.deploy.export import export_onnx
    from search_spaces.catalog import get_space
    space = get_space(name, **SMALL_OPTIONS[name], num_classes=10)
    arch = space.sample(np.random.default_rng(0))
    diffs: dict[int, float] = {}
    path, worst = export_onnx(space, arch, tmp_path / "net.onnx", seed=1, diffs=diffs)   # default: dynamic
    assert set(diffs) == {1, 8} and worst == max(diffs.values()) < 1e-4
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
