"""Int8 latency: statically quantized QDQ graphs (latency.quantize), int8 tables, the `cpu-int8` target,
and the bad inputs of `nas latency profile --precision int8` (one line, exit 2, nothing written)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import latency.profile
from latency import host_tables
from latency.onnx_io import export_onnx, session
from latency.quantize import Calibration, Quantizer, QuantizeError, digits_calibration, float_ops
from latency.table import LatencyTable
from latency.targets import load_table, lut_model, target_names
from nas.cli.main import main
from nas.core.errors import UsageError
from nas.core.layer import LayerSpec
from nas.core.ops import build_layer
from nas.core.space import SearchSpace
from search_spaces.catalog import get_space


def _layer(space: str, prefix: str) -> LayerSpec:
    return next(s for s in get_space(space).all_layers() if s.key.startswith(prefix))


def _optimized_ops(path: Path, tmp: Path) -> list[str]:
    import onnx
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp / "opt.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp / "opt.onnx")).graph.node]


def test_conv_layer_runs_int8_kernels_and_agrees_with_float(tmp_path: Path) -> None:
    """A 3x3 conv + BN + ReLU6 layer becomes one QLinearConv (per-channel weights) whose output stays
    within a few quantization steps of the float layer's on digits-like input."""
    spec = _layer("mbconv", "conv_bn_act(act=relu6,cin=3,cout=32")
    module = build_layer(spec)
    with torch.no_grad():   # BN statistics of a trained layer, not the identity of a fresh one
        bn = next(m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_var.uniform_(0.5, 2.0)
        bn.running_mean.uniform_(-0.5, 0.5)
    src = export_onnx(module, torch.randn(1, *spec.input_shape), tmp_path / "f.onnx")
    calib = digits_calibration(224)
    q, left = Quantizer(calib).quantize(src, spec.input_shape, spec.key)
    assert left == []
    ops = _optimized_ops(q, tmp_path)
    assert ops.count("QLinearConv") == 1 and "Conv" not in ops
    x = calib.inputs(spec.input_shape, 2)[1:]
    yf = session(src).run(None, {"input": x})[0]
    yq = session(q).run(None, {"input": x})[0]
    step = (yf.max() - yf.min()) / 255   # one uint8 step of the output's range
    assert np.abs(yq - yf).mean() < 2 * step and np.abs(yq - yf).max() < 12 * step
    assert np.corrcoef(yq.ravel(), yf.ravel())[0, 1] > 0.99


def test_average_pool_layer_runs_the_int8_kernel_of_a_net(tmp_path: Path) -> None:
    """A lone average pool is quantized as inside a quantized net (QLinearAveragePool; left alone,
    onnxruntime kept it a float AveragePool, 3-4x faster than the net's); an op with no int8 kernel
    (the nb201 head's BatchNormalization, which no conv precedes) is reported, refused when strict."""
    spec = _layer("nb201", "nb201_edge(cin=16,cout=16,op=avg_pool_3x3)")
    src = export_onnx(build_layer(spec), torch.randn(1, *spec.input_shape), tmp_path / "f.onnx")
    quant = Quantizer(digits_calibration(32))
    q, left = quant.quantize(src, spec.input_shape, spec.key)
    assert left == [] and "QLinearAveragePool" in _optimized_ops(q, tmp_path)
    head = _layer("nb201", "nb201_head")
    src = export_onnx(build_layer(head), torch.randn(1, *head.input_shape), tmp_path / "h.onnx")
    q, left = quant.quantize(src, head.input_shape, head.key)
    assert left == ["BatchNormalization"] == float_ops(q)
    with pytest.raises(QuantizeError, match=r"cannot quantize op BatchNormalization of .*nb201_head"):
        Quantizer(digits_calibration(32), strict=True).quantize(src, head.input_shape, head.key)


def test_calibration_inputs_follow_the_layer_shape() -> None:
    calib = digits_calibration(32, n=4)
    assert calib.images.shape == (4, 3, 32, 32)
    assert abs(float(calib.images.mean())) < 0.5   # normalised like nas.data's digits
    x = calib.inputs((8, 16, 16))
    assert x.shape == (4, 8, 16, 16) and np.allclose(x[:, 0], x[:, 3])   # channels repeated
    assert calib.inputs((10, 7)).shape == (4, 10, 7)
    with pytest.raises(UsageError, match="shape 1x32x32; the net takes 3x224x224"):
        Calibration("gray.npy", np.zeros((4, 1, 32, 32), np.float32)).check_input((3, 224, 224))
    with pytest.raises(UsageError, match="expected images N x C x H x W"):
        Calibration("flat.npy", np.zeros((4, 3072), np.float32))


def _bad(capsys: pytest.CaptureFixture[str], out: Path, *extra: str) -> str:
    code = main(["latency", "profile", "--space", "nb201", "--out", str(out), "--clock", "cpu", "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert not out.exists() and all(p.suffix == ".npy" for p in out.parent.iterdir())
    return err


def test_bad_int8_inputs_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t.json"
    assert "unknown precision 'int4'; valid: float32, int8" in _bad(capsys, out, "--precision", "int4")
    assert "unknown precision 'fp16'" in _bad(capsys, out, "--precision", "fp16")
    gray = tmp_path / "gray.npy"
    np.save(gray, np.zeros((8, 1, 32, 32), np.float32))
    assert "shape 1x32x32; the net takes 3x32x32" in _bad(capsys, out, "--precision", "int8", "--dataset", str(gray))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((8, 3072), np.float32))
    assert "has shape (8, 3072)" in _bad(capsys, out, "--precision", "int8", "--dataset", str(flat))
    assert "apply to --precision int8 only" in _bad(capsys, out, "--dataset", "digits")
    # nb201's head starts with a BatchNormalization no conv precedes: no int8 kernel
    err = _bad(capsys, out, "--precision", "int8", "--int8-strict")
    assert "cannot quantize op BatchNormalization of layer nb201_head" in err


def test_int8_table_records_precision_format_calibration_and_float_ops(tmp_path: Path) -> None:
    from nas.api_latency import profile
    out = tmp_path / "nb201_int8.json"
    table = profile("nb201", str(out), progress=False, clock="cpu", calibration_nets=0, precision="int8",
                    warmup=1, repeats=3)
    saved = LatencyTable.load(out)
    m = saved.metadata
    assert m["precision"] == "int8" and m["quantization"]["quant_format"] == "QDQ"
    assert m["quantization"]["weights"].endswith("per channel")
    assert m["quantization"]["calibration"]["dataset"] == "digits"
    nb = get_space("nb201")
    assert set(saved.entries) == {s.key for s in nb.all_layers() + nb.all_join_layers()} == set(table.entries)
    assert m["joins"] and any(k.startswith("nb201_sum") for k in saved.entries)
    assert m["float_ops"] == {next(k for k in saved.entries if k.startswith("nb201_head")): ["BatchNormalization"]}
    convs = [k for k in saved.entries if "nor_conv" in k]
    assert convs and not set(convs) & set(m["float_ops"])


def _fake_profile(calls: list[str]):  # type: ignore[no-untyped-def]
    def prof(space: SearchSpace, path: Path, progress: bool, precision: str = "float32") -> LatencyTable:
        calls.append(str(path))
        quant = {"quantization": {"latent_ops": "as in a net", "boundaries": "in-net"},   # as real int8 tables
                 "graph": "exported"} if precision == "int8" else {}
        table = LatencyTable(space.name, space.options(), {"source": "measured", "precision": precision,
                                                            "cpu": latency.profile.cpu_model(), **quant})
        for spec in space.all_layers():
            table.add(spec.key, 0.5)
        table.save(path)
        return table
    return prof


def test_cpu_int8_target_is_cached_apart_from_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NAS_AUTO_PROFILE", "1")
    monkeypatch.setattr(latency.profile, "cpu_model", lambda: "Fake CPU 8")
    assert "cpu-int8" in target_names()
    calls: list[str] = []
    monkeypatch.setattr(host_tables, "_profile", _fake_profile(calls))
    space = get_space("mbconv")
    arch = space.parse_any("single-path-nas")
    assert lut_model("cpu-int8", space, progress=False).predict(arch) == pytest.approx(0.5 * len(space.layers(arch)))
    assert len(calls) == 1 and Path(calls[0]).parent.name.endswith("_int8")
    lut_model("cpu-int8", space)   # cached
    assert len(calls) == 1
    assert load_table("cpu-int8", "mbconv").metadata["precision"] == "int8"
    # a float table of this machine is not an int8 one
    assert not host_tables.matches_host({"source": "measured", "cpu": "Fake CPU 8",
                                         "runtime_version": host_tables.runtime_version()}, "int8")
    monkeypatch.setenv("NAS_AUTO_PROFILE", "0")
    with pytest.raises(UsageError, match="--precision int8 --out"):
        load_table("cpu-int8", get_space("nasnet"))


@pytest.mark.slow
def test_real_int8_profile_on_first_use_and_validate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A tiny mbconv is really profiled as int8 on first use of `cpu-int8`, then validated on 4 nets."""
    from latency.validate import validate
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NAS_AUTO_PROFILE", "1")
    monkeypatch.setattr(latency.profile, "cpu_model", lambda: "Fake CPU 9")
    space = get_space("mbconv", resolution=32, width_mult=0.25)
    table = load_table("cpu-int8", space, progress=False)
    assert table.metadata["precision"] == "int8" and "correction" in table.metadata
    r = validate(space, table, samples=4, seed=3, rounds=2, progress=False, clock="cpu").report
    assert r["settings"]["precision"] == "int8" and r["metrics"]["joint_lut"]["n"] == 4
    assert r["metrics"]["joint_lut"]["spearman"] > 0


NB201_NONE = "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"


def test_nb201_join_layers_are_the_adds_and_muls_of_the_int8_net(tmp_path: Path) -> None:
    """Ground truth: onnxruntime's int8 graph of a whole nb201 net runs one QLinearAdd per node-sum
    input beyond the first (plus one per residual block, inside its layer) and one QLinearMul per
    `none` edge; `join_layers` lists exactly those (a 1-cell-per-stage net keeps the test fast)."""
    space = get_space("nb201", cells=1)
    arch = space.parse(NB201_NONE)
    joins = space.join_layers(arch)
    src = export_onnx(space.build(arch).eval(), torch.randn(1, 3, 32, 32), tmp_path / "net.onnx")
    q, _ = Quantizer(digits_calibration(32)).quantize(src, (3, 32, 32), "net")
    ops = _optimized_ops(q, tmp_path)
    adds = sum(int(s.kwargs["inputs"]) - 1 for s in joins if s.op == "nb201_sum")
    assert adds == 3 * 3 and ops.count("QLinearAdd") == adds + 2
    assert ops.count("QLinearMul") == sum(s.op == "nb201_zero" for s in joins) == 2 * 3
    assert {s.key for s in joins} <= {s.key for s in space.all_join_layers()}


def test_int8_tables_price_joins_float_tables_do_not() -> None:
    """A table prices the join layers only when its metadata says it timed them (int8 profiles): float
    predictions of nb201 stay the sum over `space.layers`; the vectorised path agrees with per-arch."""
    from latency.model import LUTModel
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    specs = space.all_layers() + space.all_join_layers()
    entries = {s.key: {"ms": float(rng.uniform(0.01, 1.0))} for s in specs}
    archs = [space.sample(rng) for _ in range(20)] + [space.parse(NB201_NONE)]
    for joins in (False, True):
        meta = {"precision": "int8" if joins else "float32", **({"joins": "timed"} if joins else {})}
        model = LUTModel(space, LatencyTable("nb201", space.options(), meta, dict(entries)))
        for a in archs:
            want = sum(entries[s.key]["ms"] for s in space.layers(a) + (space.join_layers(a) if joins else []))
            assert model.predict(a) == pytest.approx(want, rel=1e-12)
        assert model.separable == (not joins)   # int8 nb201: ReLU joins depend on several edges of a cell
        assert model.predict_many(archs) == pytest.approx([model.predict(a) for a in archs], rel=1e-12)
