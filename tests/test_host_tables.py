"""`--target cpu` means this machine: shipped Xeon tables only on that Xeon, else cached / profiled / refused.

The running CPU model and onnxruntime version are faked (monkeypatch), so these tests behave the
same on any machine.
"""
from __future__ import annotations

from pathlib import Path

import pytest

import latency.profile
from latency import host_tables
from latency.table import LatencyTable
from latency.targets import TABLES, load_table, lut_model, target_names
from nas.cli.main import main
from nas.core.errors import UsageError
from nas.core.space import SearchSpace
from search_spaces.catalog import get_space

XEON = LatencyTable.load(TABLES / "xeon-2.8ghz" / "mbconv.json").metadata


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An empty cache; the test sets the CPU model with `fake(cpu, version)`."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NAS_AUTO_PROFILE", "1")
    return monkeypatch


def fake(mp: pytest.MonkeyPatch, cpu: str, version: str = str(XEON["runtime_version"])) -> None:
    mp.setattr(latency.profile, "cpu_model", lambda: cpu)
    mp.setattr(host_tables, "runtime_version", lambda: version)


def test_cpu_slug() -> None:
    assert host_tables.cpu_slug("Intel(R) Xeon(R) Processor @ 2.80GHz") == "intel-xeon-2.80ghz"
    assert host_tables.cpu_slug("AMD EPYC 7B13 64-Core Processor") == "amd-epyc-7b13-64-core"
    assert host_tables.cpu_slug("") == "unknown-cpu"


def test_shipped_tables_are_a_named_target() -> None:
    assert {"cpu", "xeon-2.8ghz", "pixel1"} <= set(target_names())
    assert XEON["cpu"] == "Intel(R) Xeon(R) Processor @ 2.80GHz" and XEON["source"] == "measured"


def test_on_the_xeon_cpu_is_the_shipped_table(machine: pytest.MonkeyPatch) -> None:
    fake(machine, str(XEON["cpu"]))
    shipped = LatencyTable.load(TABLES / "xeon-2.8ghz" / "nasnet.json")
    assert load_table("cpu", get_space("nasnet")).entries == shipped.entries
    assert load_table("cpu", "nasnet").entries == shipped.entries


def test_other_cpu_refuses_slow_spaces_with_the_command(machine: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake(machine, "AMD EPYC 9999 96-Core Processor")
    # a space outside AUTO_PROFILE is refused with the command (vit_resnas profiles on first use since
    # issue 29; taken out of the set here to test the refusal)
    machine.setattr(host_tables, "AUTO_PROFILE", host_tables.AUTO_PROFILE - {"vit_resnas"})
    expected = tmp_path / "tables" / f"amd-epyc-9999-96-core_ort-{XEON['runtime_version']}" / "vit_resnas.json"
    with pytest.raises(UsageError) as err:
        load_table("cpu", get_space("vit_resnas"))
    assert f"nas latency profile --space vit_resnas --out {expected}" in str(err.value)
    assert "AMD EPYC 9999" in str(err.value)


def _fake_profile(calls: list[str]):  # type: ignore[no-untyped-def]
    def profile(space: SearchSpace, path: Path, progress: bool) -> LatencyTable:
        calls.append(str(path))
        table = LatencyTable(space.name, space.options(), {"source": "measured", "cpu": latency.profile.cpu_model()})
        for spec in space.all_layers():
            table.add(spec.key, 1.0)
        table.save(path)
        return table
    return profile


def test_other_cpu_profiles_mbconv_once_into_the_cache(machine: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake(machine, "AMD EPYC 9999")
    calls: list[str] = []
    machine.setattr(host_tables, "_profile", _fake_profile(calls))
    space = get_space("mbconv")
    arch = space.parse_any("single-path-nas")
    model = lut_model("cpu", space, progress=False)
    assert model.predict(arch) == pytest.approx(len(space.layers(arch)))   # every fake entry is 1 ms
    assert calls == [str(tmp_path / "tables" / f"amd-epyc-9999_ort-{XEON['runtime_version']}" / "mbconv.json")]
    lut_model("cpu", space)                       # cached now: no second profile
    assert len(calls) == 1
    fake(machine, "AMD EPYC 9999", "9.9.9")       # another onnxruntime: another table
    lut_model("cpu", space)
    assert len(calls) == 2 and "_ort-9.9.9" in calls[1]
    lut_model("cpu", get_space("mbconv", width_mult=0.5))   # other options: their own file
    assert len(calls) == 3 and Path(calls[2]).name.startswith("mbconv-") and calls[2] != calls[1]


def test_auto_profile_can_be_switched_off(machine: pytest.MonkeyPatch) -> None:
    fake(machine, "AMD EPYC 9999")
    machine.setenv("NAS_AUTO_PROFILE", "0")
    with pytest.raises(UsageError, match="nas latency profile --space mbconv"):
        load_table("cpu", get_space("mbconv"))


def test_real_profile_on_first_use(machine: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A tiny mbconv (32 px, width 0.25) is really profiled with onnxruntime and cached."""
    fake(machine, "Fake CPU 1")
    space = get_space("mbconv", resolution=32, width_mult=0.25)
    table = load_table("cpu", space, progress=False)
    assert table.metadata["cpu"] == "Fake CPU 1" and table.metadata["source"] == "measured"
    assert set(table.entries) == {s.key for s in space.all_layers()}
    assert all(e["ms"] >= 0 for e in table.entries.values()) and sum(e["ms"] for e in table.entries.values()) > 0
    assert Path(table.source).parent == tmp_path / "tables" / f"fake-1_ort-{XEON['runtime_version']}"


def test_cli_refusal_is_one_line_exit_2(machine: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake(machine, "AMD EPYC 9999")
    machine.setattr(host_tables, "AUTO_PROFILE", host_tables.AUTO_PROFILE - {"vit_resnas"})   # a space it refuses
    assert main(["latency", "predict", "--space", "vit_resnas", "--target", "cpu", "--arch", "vit-resnas-tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nas latency profile --space vit_resnas --out" in err


def test_cached_int8_table_of_an_older_int8_model_is_profiled_again(machine: pytest.MonkeyPatch,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """An nb201 int8 table without join layers (node sums) or quantized pools under-prices whole nets
    2-3x: the cache must not serve it."""
    fake(machine, "AMD EPYC 9999")
    space = get_space("nb201")
    path = host_tables.host_table_path(space, None, "int8")
    old = LatencyTable(space.name, space.options(), {"source": "measured", "precision": "int8",
                                                      "quantization": {"precision": "int8"}})
    old.save(path)
    assert host_tables.stale_int8(old, space) == "layers timed without the quantized pools a whole net runs"
    old.metadata["quantization"]["latent_ops"] = "yes"
    assert host_tables.stale_int8(old, space) == "no node-sum / zero-edge layers"
    old.metadata["joins"] = "timed"
    assert "quantize / dequantize / layout" in str(host_tables.stale_int8(old, space))
    old.metadata["quantization"]["boundaries"] = "in-net"
    old.metadata["graph"] = "exported"
    assert host_tables.stale_int8(old, space) is None
    calls: list[Path] = []

    def profile(sp: SearchSpace, p: Path, progress: bool) -> LatencyTable:
        calls.append(p)
        new = LatencyTable(sp.name, sp.options(), {**old.metadata, "joins": "timed"})
        new.save(p)
        return new
    old.metadata.pop("joins")
    old.save(path)
    with caplog.at_level("WARNING"):
        table = host_tables.resolve(space, [], progress=False, profile=profile, precision="int8")
    assert calls == [path] and table.metadata.get("joins") == "timed"
    assert "older int8 model (no node-sum / zero-edge layers)" in caplog.text
    calls.clear()
    host_tables.resolve(space, [], progress=False, profile=profile, precision="int8")   # now current: kept
    assert calls == []
