"""`nas latency calibrate --basis`: a new nb201 device modelled from the shipped measured devices.

Reference values: the shipped NAS-Bench-201 measurements (latency/bench_devices.py). A device whose
latencies are a known positive mix of two shipped devices must be recovered from 10 measured nets.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from latency.bench_devices import nb201_latency
from latency.bench_calibration import HELP_TEST_DEVICES, basis_for
from nas.cli.main import main


def _measure(tmp_path: Path, ms: dict[str, float], n: int = 10, seed: int = 3) -> Path:
    blocks = sorted(ms)
    pick = np.random.default_rng(seed).choice(len(blocks), size=n, replace=False)
    f = tmp_path / "m.csv"
    f.write_text("arch,ms\n" + "".join(f"{blocks[i]},{ms[blocks[i]]!r}\n" for i in pick))
    return f


def test_a_mix_of_two_devices_is_recovered_from_ten_nets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = nb201_latency()
    truth = {b: 1.0 + 0.5 * data.ms["pixel3"][b] + 2.0 * data.ms["raspi4"][b] for b in data.index}
    out = tmp_path / "mix.json"
    assert main(["latency", "calibrate", "--space", "nb201", "--measurements", str(_measure(tmp_path, truth)),
                 "--out", str(out), "--basis", "pixel3,raspi4,gold_6240", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    fam = r["families"]
    assert r["model"] == "blend" and fam["basis"]["cv_error"] < fam["roofline"]["cv_error"]
    assert fam["basis"]["weight"] + fam["basis+counts"]["weight"] > 0.9   # the exact families dominate the blend
    assert r["basis_weights"]["raspi4"] == pytest.approx(2.0, rel=0.05)
    table = json.loads(out.read_text())
    assert table["format"] == "nas-measured-table/1" and len(table["archs"]) == 15625
    blocks = sorted(truth)
    rho = spearmanr([table["archs"][b] for b in blocks], [truth[b] for b in blocks])[0]
    assert rho > 0.999
    # the table is a target like the shipped devices
    from latency.targets import lut_model
    from search_spaces.catalog import get_space
    space = get_space("nb201")
    model = lut_model(str(out), space)
    assert model.predict(space.parse(blocks[0])) == table["archs"][blocks[0]]


def test_basis_errors_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = nb201_latency()
    m = _measure(tmp_path, data.ms["pixel3"])
    out = tmp_path / "never.json"
    for extra, message in ((["--basis", "pixel9"], "unknown benchmark device 'pixel9'"),
                           (["--basis", "all", "-o", "channels=8"], "--basis uses the measured NAS-Bench-201")):
        code = main(["latency", "calibrate", "--space", "nb201", "--measurements", str(m), "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and not out.exists(), err


def test_benchmark_basis_never_holds_the_target_or_a_test_device() -> None:
    for target in ("pixel2", "pixel3"):
        refs = basis_for(target, "help")
        assert target not in refs and not set(refs) & set(HELP_TEST_DEVICES)
    assert len(basis_for("pixel2", "help")) == 21 and len(basis_for("pixel3", "help")) == 20


@pytest.mark.slow   # ~10 s of CPU: features of all 15,625 archs and 2 draws of every family's fit
def test_bench_latency_prices_the_fpga_as_a_roofline() -> None:
    """fpga latencies are a per-op roofline almost exactly (Spearman > 0.99 from 10 archs): the
    leave-device-out benchmark (latency/bench_calibration.py) reports it for the roofline, and the
    blend keeps most of it (the live-op counts alone do not)."""
    from latency.bench_calibration import leave_device_out
    r = leave_device_out(["fpga"], [10], repeats=2, seed=0, help_six=False)
    row = r["devices"]["fpga"]["10"]
    assert row["roofline"] > 0.99 and row["ours"] > 0.95 and row["ours"] > row["counts"]
    assert r["mean"]["10"]["ours"] == row["ours"] and not r["help_six"]

