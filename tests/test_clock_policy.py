"""One clock policy: `nas latency predict --onnx --target cpu` times with `--clock auto` like profile /
validate and reports the spread of its repeats; profiled tables record the load they were made under,
and `nas list targets` shows it."""
from __future__ import annotations

from pathlib import Path

import pytest

from nas.pipeline.catalogue import _made
from search_spaces.catalog import get_space


def _onnx(tmp_path: Path) -> Path:
    import torch

    from latency.onnx_io import export_onnx
    space = get_space("nb201")
    arch = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    return export_onnx(space.build(arch), torch.zeros(1, 3, 32, 32), tmp_path / "n.onnx")


def test_predict_onnx_cpu_uses_the_auto_clock_and_reports_its_spread(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from nas.api_latency import predict_onnx
    from nas.cli.main import main
    r = predict_onnx(str(_onnx(tmp_path)), ["cpu"], repeats=10)["targets"]["cpu"]
    assert r["clock"] == "cpu"   # auto with one thread: the thread's CPU time, busy or not
    assert r["spread"] == pytest.approx(r["iqr_ms"] / r["latency_ms"]) and "IQR" in r["method"]
    assert main(["latency", "predict", "--onnx", str(tmp_path / "n.onnx"), "--target", "cpu", "--clock", "wall"]) == 0
    assert "wall clock" in capsys.readouterr().out


def test_list_targets_says_when_and_under_what_load_a_table_was_made(tmp_path: Path) -> None:
    from latency.profile import ProfileSettings, profile_space
    space = get_space("nb201")
    out = tmp_path / "t.json"
    table = profile_space(space, out, ProfileSettings(warmup=1, repeats=3), progress=False, clock="cpu")
    meta = table.metadata
    assert meta["load_at_start"].startswith("load average") and meta["load_at_end"].startswith("load average")
    made = _made(meta)
    assert made is not None and "cpu clock" in made and "load at start: load average" in made
    assert _made({"source": "measured", "date": "2026-01-01"}) == "2026-01-01, wall clock, load not recorded"
    assert _made({"source": "model"}) is None
