"""The Python API behaves like the CLI: same pipeline, same result, same torch thread handling."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_api_search_equals_cli_search(tmp_path: Path) -> None:
    from nas import SearchConfig, search
    from nas.cli.main import main
    assert main(["search", "--space", "mbconv", "--target", "pixel1", "--latency-ms", "80", "--trials", "12",
                 "--seed", "3", "--quiet", "--out", str(tmp_path / "cli")]) == 0
    cli_best = json.loads((tmp_path / "cli" / "best.json").read_text())
    res = search(SearchConfig(space="mbconv", targets=("pixel1",), latency_ms=(80.0,), trials=12, seed=3,
                              out=str(tmp_path / "api")), progress=False)
    assert res.summary["arch"] == cli_best["arch"]
    assert res.summary["latency_ms"] == pytest.approx(cli_best["latency_ms"])
    assert res.summary["metrics"]["score"] == pytest.approx(cli_best["metrics"]["score"])


def test_api_fixes_torch_threads_like_the_cli() -> None:
    """`from nas import search` used to leave torch at its default threads (7x slower than the CLI)."""
    code = ("import torch; torch.set_num_threads(7)\n"
            "from nas import SearchConfig, search\n"
            "from nas.training.threads import default_threads\n"
            "search(SearchConfig(space='mbconv', targets=('pixel1',), trials=2), progress=False)\n"
            "print(torch.get_num_threads(), default_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    got, want = out.stdout.split()
    assert got == want


def test_lazy_api_attributes() -> None:
    import nas
    assert nas.search.__module__ == "nas.api" and callable(nas.show)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        nas.nope  # noqa: B018


def test_show_reports_spec_macs_and_latency() -> None:
    from nas import show
    from search_spaces.catalog import get_space
    info = show("mbconv", "single-path-nas", targets=["pixel1"])
    space = get_space("mbconv")
    arch = space.parse_any("single-path-nas")
    assert info["macs_m"] == pytest.approx(space.macs(arch) / 1e6)
    assert 300 < info["macs_m"] < 400      # Single-Path NAS: 365 M MACs (Stamoulis et al. 2019, Table 1)
    assert info["latency_ms"]["pixel1"] == pytest.approx(80.5, abs=1.0)   # README calibration table
