"""`--strategy darts` on every target like any space: shipped pixel1 (modelled) and amd-epyc (measured)
tables for the nasnet darts variant, found by the options-hash file name of the cpu cache (the darts
search on both targets: tests/test_darts.py).

The running CPU model and onnxruntime version are faked where `--target cpu` is involved, so these
tests behave the same on any machine.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import latency.profile
from latency import host_tables
from latency.table import LatencyTable
from latency.targets import TABLES, load_table, lut_model, shipped_path, target_spaces
from nas.core.errors import UsageError
from search_spaces.catalog import get_space

DARTS = get_space("nasnet", variant="darts")
EPYC = LatencyTable.load(TABLES / "amd-epyc" / "nasnet-3acae496.json").metadata


def fake_host(mp: pytest.MonkeyPatch, cpu: str, version: str) -> None:
    mp.setattr(latency.profile, "cpu_model", lambda: cpu)
    mp.setattr(host_tables, "runtime_version", lambda: version)


@pytest.mark.parametrize("target, source", [("pixel1", "model"), ("amd-epyc", "measured")])
def test_shipped_darts_tables_cover_every_layer(target: str, source: str) -> None:
    path = shipped_path(target, DARTS)
    # the cache's convention for non-default options: <space>-<sha1 of the sorted options JSON, 8 hex>
    assert path.name == "nasnet-3acae496.json" and path.is_file()
    assert shipped_path(target, get_space("nasnet")).name == "nasnet.json"
    table = LatencyTable.load(path)
    assert table.space == "nasnet" and table.space_options == DARTS.options()
    assert set(table.entries) == {s.key for s in DARTS.all_layers()} and len(table.entries) == 45
    assert table.metadata["source"] == source and all(e["ms"] > 0 for e in table.entries.values())
    assert "nasnet-3acae496" in target_spaces(target)


def test_pixel1_darts_table_is_the_device_model() -> None:
    """The shipped file is what `python -m latency.devices.pixel1_calibration table` writes for these options."""
    from latency.devices.pixel1 import build_table
    shipped = LatencyTable.load(shipped_path("pixel1", DARTS))
    built = build_table(DARTS).entries
    assert set(shipped.entries) == set(built)
    assert [shipped.entries[k]["ms"] for k in built] == pytest.approx([e["ms"] for e in built.values()])
    darts_v2 = DARTS.parse_any("darts-v2")
    from latency.devices.pixel1 import net_ms   # the LUT sum is the model's whole-net price (PIXEL1.md's table)
    assert lut_model("pixel1", DARTS).predict(darts_v2) == pytest.approx(net_ms(DARTS.layers(darts_v2)), rel=1e-9)
    assert 100 < lut_model("pixel1", DARTS).predict(darts_v2) < 200


def test_cpu_on_the_epyc_vm_is_the_shipped_darts_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))   # empty cache, NAS_AUTO_PROFILE=0 (conftest)
    fake_host(monkeypatch, str(EPYC["cpu"]), str(EPYC["runtime_version"]))
    table = load_table("cpu", DARTS, progress=False)
    assert Path(table.source) == TABLES / "amd-epyc" / "nasnet-3acae496.json"
    # the default variant has no table for this cpu: refused (auto-profiling is off), never the darts one
    with pytest.raises(UsageError, match="nas latency profile --space nasnet --out"):
        load_table("cpu", get_space("nasnet"), progress=False)


def test_cpu_elsewhere_refuses_with_the_cache_file_of_the_options(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    fake_host(monkeypatch, "Other CPU 7", str(EPYC["runtime_version"]))
    with pytest.raises(UsageError) as err:
        load_table("cpu", DARTS, progress=False)
    assert '-o variant="darts" -o blocks=4' in str(err.value)
    assert str(tmp_path / "tables" / f"other-7_ort-{EPYC['runtime_version']}" / "nasnet-3acae496.json") in str(err.value)


def test_nasnet_profiles_on_first_use_like_mbconv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """nasnet (both variants) profiles in seconds, so `cpu` makes its table when auto-profiling is on."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NAS_AUTO_PROFILE", "1")
    fake_host(monkeypatch, "Other CPU 7", "9.9.9")
    calls: list[str] = []

    def profile(space, path, progress):  # type: ignore[no-untyped-def]
        calls.append(Path(path).name)
        table = LatencyTable(space.name, space.options(), {"source": "measured"})
        for spec in space.all_layers():
            table.add(spec.key, 0.5)
        return table.save(path) and table

    monkeypatch.setattr(host_tables, "_profile", profile)
    arch = DARTS.parse_any("darts-v2")
    assert lut_model("cpu", DARTS).predict(arch) == pytest.approx(0.5 * len(DARTS.layers(arch)))
    lut_model("cpu", get_space("nasnet"))
    assert calls == ["nasnet-3acae496.json", "nasnet.json"]
    assert "vit_resnas" not in host_tables.AUTO_PROFILE   # 108 s: too slow to profile unasked


def test_list_targets_names_the_variant_not_the_file_hash(capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    assert main(["list", "targets"]) == 0
    out = capsys.readouterr().out
    assert "nasnet (blocks=4, variant=darts)" in out and "nasnet-3acae496" not in out
    assert "threads=None" not in out          # published whole-net data has no onnxruntime settings
