"""Latency tables, profiling and the LUT model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latency.model import LUTModel
from latency.profile import ProfileSettings, profile_space
from latency.table import LatencyTable
from latency.targets import load_table, lut_model, table_path, target_names
from nas.core.errors import LatencyError, MissingEntryError, UnknownNameError, UsageError
from search_spaces.catalog import get_space

TINY = {"resolution": 32, "width_mult": 0.25, "num_classes": 10}
FAST = ProfileSettings(warmup=1, repeats=3)


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lut") / "tiny.json"
    profile_space(get_space("mbconv", **TINY), path, FAST, progress=False)
    return path


def test_profile_writes_every_layer_with_metadata(tiny_table: Path) -> None:
    space = get_space("mbconv", **TINY)
    table = LatencyTable.load(tiny_table)
    assert set(table.entries) == {s.key for s in space.all_layers()}
    for field in ("device", "cpu", "runtime", "runtime_version", "provider", "threads", "opt_level", "batch",
                  "warmup", "repeats", "statistic", "date", "call_overhead_ms"):
        assert field in table.metadata, field
    assert all(e["ms"] >= 0 and e["raw_ms"] > 0 and "iqr_ms" in e for e in table.entries.values())


def test_profile_resumes(tiny_table: Path, tmp_path: Path) -> None:
    data = json.loads(tiny_table.read_text())
    dropped = sorted(data["entries"])[:3]
    for k in dropped:
        del data["entries"][k]
    kept = dict(data["entries"])
    part = tmp_path / "part.json"
    part.write_text(json.dumps(data))
    table = profile_space(get_space("mbconv", **TINY), part, FAST, progress=False)
    assert set(dropped) <= set(table.entries)
    assert all(table.entries[k] == v for k, v in kept.items())  # existing rows untouched


def test_resume_with_other_settings_refused(tiny_table: Path) -> None:
    with pytest.raises(LatencyError, match="settings"):
        profile_space(get_space("mbconv", **TINY), tiny_table, ProfileSettings(threads=2), progress=False)


def test_vectorised_prediction_equals_sum(tiny_table: Path, rng: np.random.Generator) -> None:
    space = get_space("mbconv", **TINY)
    model = LUTModel(space, LatencyTable.load(tiny_table))
    archs = [space.sample(rng) for _ in range(50)]
    loop = np.array([model.predict(a) for a in archs])
    np.testing.assert_allclose(model.predict_many(archs), loop, rtol=1e-12)
    manual = model.overhead + sum(model.table.ms(s.key) for s in space.layers(archs[0]))
    assert loop[0] == pytest.approx(manual)
    assert model.min_ms() <= loop.min()


def test_missing_entry_names_key(tiny_table: Path) -> None:
    space = get_space("mbconv", **TINY)
    table = LatencyTable.load(tiny_table)
    key = space.all_layers()[5].key
    del table.entries[key]
    with pytest.raises(MissingEntryError, match=key.replace("(", r"\(").replace(")", r"\)")):
        LUTModel(space, table)


def test_table_of_other_space_options_refused(tiny_table: Path) -> None:
    with pytest.raises(LatencyError, match="options"):
        LUTModel(get_space("mbconv"), LatencyTable.load(tiny_table))


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    ('{"format": "other"}', "format"),
    ('{"format": "nas-latency-table/1", "space": "mbconv", "space_options": {}, "metadata": {}, '
     '"entries": {"k": {"ms": -1}}}', "invalid"),
    ('{"format": "nas-latency-table/1", "space": "mbconv", "space_options": {}, "metadata": {}, '
     '"entries": {"k": {"x": 1}}}', "no 'ms'"),
])
def test_corrupt_tables(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "t.json"
    p.write_text(content)
    with pytest.raises(LatencyError, match=match):
        LatencyTable.load(p)


@pytest.mark.parametrize("target", ["xeon-2.8ghz", "pixel1"])
@pytest.mark.parametrize("space_name", ["mbconv", "nasnet", "hytra", "vit_resnas"])
def test_shipped_tables_cover_every_space(target: str, space_name: str) -> None:
    """Every shipped target has a table for every space; presets and random archs predict."""
    assert target in target_names()
    model = lut_model(target, get_space(space_name))
    space = model.space
    rng = np.random.default_rng(0)
    archs = [space.parse(s) for s in space.presets.values()] + [space.sample(rng) for _ in range(5)]
    for arch in archs:
        ms = model.predict(arch)
        assert 0.05 < ms < 20_000.0, (space_name, target, ms)


def test_unknown_target_and_missing_space() -> None:
    with pytest.raises(UnknownNameError, match="valid targets"):
        load_table("nope", "mbconv")
    with pytest.raises(UsageError, match="no table for space"):
        table_path("xeon-2.8ghz", "not-a-space")


def _has_provider(name: str) -> bool:
    import onnxruntime as ort
    return name in ort.get_available_providers()


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["CUDAExecutionProvider", "TensorrtExecutionProvider"])
def test_profile_and_validate_on_gpu_provider(provider: str, tmp_path: Path) -> None:
    """On a machine whose onnxruntime has the provider (run with -m gpu): a table with GPU metadata
    whose LUT sums track whole-net GPU latency."""
    if not _has_provider(provider):
        pytest.skip(f"onnxruntime here has no {provider}")
    from latency.validate import validate
    space = get_space("mbconv", **TINY)
    out = tmp_path / "gpu.json"
    table = profile_space(space, out, ProfileSettings(provider=provider, warmup=5, repeats=20), progress=False)
    assert table.metadata["provider"] == provider and table.metadata["gpu"]
    r = validate(space, LatencyTable.load(out), samples=6, progress=False).report
    assert r["metrics"]["joint_lut"]["n"] == 6


def test_unavailable_provider_is_a_usage_error(tmp_path: Path) -> None:
    if _has_provider("CUDAExecutionProvider"):
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(UsageError, match="CUDAExecutionProvider.*not available.*CPUExecutionProvider"):
        profile_space(get_space("mbconv", **TINY), tmp_path / "t.json",
                      ProfileSettings(provider="CUDAExecutionProvider", warmup=0, repeats=1), progress=False)
    assert not (tmp_path / "t.json").exists()
