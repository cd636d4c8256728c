"""Measured whole-net latency targets (NAS-Bench-201 devices) and the `tabular` evaluator.

Reference values are the shipped published measurements themselves: a lookup must return the
file's number exactly (never an interpolation), and every failure mode must be one clear error.
"""
from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from latency.measured import FORMAT, MeasuredModel, MeasuredTable, MissingArchError, shipped_table
from latency.targets import lut_model, target_names, target_spaces
from nas.core.errors import LatencyError, NasError, UnknownNameError, UsageError
from latency import bench_devices
from search_spaces import bench_data
from search_spaces.catalog import get_space

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


def _csv_rows(n: int) -> list[dict[str, str]]:
    with gzip.open(bench_devices.NB201_LATENCY, "rt") as fh:
        reader = csv.DictReader(fh)
        return [row for _, row in zip(range(n), reader)]


def test_all_27_devices_are_targets_for_nb201_only() -> None:
    assert len(bench_devices.DEVICES) == 27
    for name in ("pixel3", "raspi4", "eyeriss", "fpga", "titan_rtx_256", "gold_6226", "pixel2"):
        assert name in target_names() and target_spaces(name) == ["nb201"]
    with pytest.raises(UsageError, match="has no table for space 'nats_sss'.*nb201"):
        lut_model("pixel3", get_space("nats_sss"))
    with pytest.raises(UnknownNameError, match="valid targets:.*pixel3"):
        lut_model("pixel9", get_space("nb201"))


def test_lookup_returns_the_published_number_exactly() -> None:
    space = get_space("nb201")
    models = {d: lut_model(d, space) for d in ("pixel3", "raspi4", "fpga", "titanx_32", "samsung_s7")}
    for row in _csv_rows(40):
        arch = space.parse(row["arch"])
        for d, m in models.items():
            assert m.predict(arch) == float(row[d])
    m = models["pixel3"]
    assert isinstance(m, MeasuredModel) and not m.separable
    assert m.breakdown(space.parse(BEST)) == [(f"whole net (measured): {BEST}", m.predict(space.parse(BEST)))]
    column = bench_devices.nb201_latency().ms["raspi4"]
    assert models["raspi4"].min_ms() == min(column.values())
    meta = shipped_table("samsung_s7").metadata
    assert meta["batch"] == 1 and "whole milliseconds" in meta["units"] and "HELP" in meta["source"]
    assert shipped_table("titan_rtx_256").metadata["batch"] == 256


def test_measured_model_errors(tmp_path: Path) -> None:
    space = get_space("nb201")
    table = MeasuredTable("nb201", space.options(), {"device": "toy"}, {BEST: 3.0}, "toy.json")
    model = MeasuredModel(space, table)
    assert model.predict(space.parse(BEST)) == 3.0 and model.min_ms() == 3.0
    with pytest.raises(MissingArchError, match="no measurement for arch .*none~0"):
        model.predict(space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))
    with pytest.raises(LatencyError, match="is for space 'nb201', not 'nats_sss'"):
        MeasuredModel(get_space("nats_sss"), table)
    with pytest.raises(LatencyError, match="measured on nb201 nets with options"):
        MeasuredModel(get_space("nb201", channels=8), table)
    # files: a good one works as --target FILE; corrupt ones fail with one line
    good = tmp_path / "dev.json"
    table.save(good)
    assert lut_model(str(good), space).predict(space.parse(BEST)) == 3.0
    bad = tmp_path / "bad.json"
    for content, match in (("{not json", "not valid JSON"),
                           (json.dumps({"format": FORMAT, "space": "nb201", "space_options": {}, "metadata": {},
                                        "archs": {BEST: -1}}), "positive number of ms"),
                           (json.dumps({"format": FORMAT, "space": "nb201"}), "field 'space_options' missing")):
        bad.write_text(content)
        with pytest.raises(LatencyError, match=match):
            MeasuredTable.load(bad)


def test_measured_target_constrains_a_search(tmp_path: Path) -> None:
    """Latency bound on a measured device: the best arch is feasible and its latency is the lookup."""
    from nas import SearchConfig, search
    cfg = SearchConfig(space="nb201", space_options={"candidates": "naslib"}, targets=["pixel3"], latency_ms=[10.0],
                       strategy="evolution", evaluator="tabular", evaluator_options={"dataset": "cifar10"},
                       trials=40, seed=1, out=str(tmp_path / "run"))
    result = search(cfg, progress=False)
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    truth = bench_data.nb201_records("cifar10")[best["arch"]].val_accuracy
    assert best["metrics"]["cifar10_acc"] == truth and best["latency_ms"] <= 10.0
    assert best["latency_ms"] == bench_devices.nb201_latency().ms["pixel3"][best["arch"]]
    assert result.summary["failed_trials"] == 0


def test_tabular_evaluator_reads_ground_truth() -> None:
    from nas.evaluators.catalog import make_evaluator
    nats = get_space("nats_sss")
    ev = make_evaluator("tabular", nats)
    acc = bench_data.nats_sss_accuracy()
    for block in ("64:64:64:64:64", "8:8:8:8:8", "16:16:16:16:16"):
        m = ev(nats.parse(block))
        assert m["score"] == m["accuracy"] == m["cifar10_acc"] == acc[block]
    assert ev(nats.parse("16:16:16:16:16"))["cifar10_acc"] == 87.59   # first row of the data file
    nb = get_space("nb201", candidates="naslib")
    for ds in ("cifar10", "cifar100", "ImageNet16-120"):
        ev = make_evaluator("tabular", nb, dataset=ds)
        rec = bench_data.nb201_records(ds)
        arch = nb.sample(np.random.default_rng(3))
        assert ev(arch)[f"{ds}_acc"] == rec[nb.format(arch)].val_accuracy


def test_tabular_evaluator_errors(tmp_path: Path) -> None:
    from nas.evaluators.catalog import make_evaluator
    with pytest.raises(UsageError, match="restrict the search with -o candidates=naslib"):
        make_evaluator("tabular", get_space("nb201"))
    with pytest.raises(UsageError, match="dataset 'imagenet'; valid datasets: cifar10, cifar100, ImageNet16-120"):
        make_evaluator("tabular", get_space("nb201", candidates="naslib"), dataset="imagenet")
    with pytest.raises(UsageError, match="no ground truth for space 'mbconv'"):
        make_evaluator("tabular", get_space("mbconv"))
    with pytest.raises(UsageError, match="no option 'proxy'"):
        make_evaluator("tabular", get_space("nats_sss"), proxy="synflow")
    f = tmp_path / "c.txt"
    f.write_text("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")   # an arch NASLib has no truth for
    with pytest.raises(UsageError, match="has no nb201 ground truth on cifar10"):
        make_evaluator("tabular", get_space("nb201", candidates=str(f)))
    ev = make_evaluator("tabular", get_space("nb201", candidates="naslib"))
    space = get_space("nb201")
    with pytest.raises(NasError, match="not in the candidate list naslib"):
        ev(space.parse("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"))


def test_cli_search_writes_ground_truth_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli.main import main
    out = tmp_path / "run"
    code = main(["search", "--space", "nats_sss", "--evaluator", "tabular", "--strategy", "evolution",
                 "--target", "pixel1", "--trials", "30", "--seed", "0", "--out", str(out)])
    assert code == 0
    best = json.loads((out / "best.json").read_text())
    accs = {k: v for k, v in best["metrics"].items() if "acc" in k}
    assert accs and all(v == bench_data.nats_sss_accuracy()[best["arch"]] for v in accs.values())
    capsys.readouterr()
    assert main(["list", "targets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    pixel3 = [r for r in rows if r["target"] == "pixel3"]
    assert pixel3 and pixel3[0]["units"] == "ms" and pixel3[0]["batch"] == 1 and "HW-NAS-Bench" in pixel3[0]["source"]



@pytest.mark.parametrize("target", ["amd-epyc", "pixel1"])   # the shipped ones: `cpu` is this machine's own
@pytest.mark.parametrize("space_name", ["nb201", "nats_sss"])
def test_shipped_layer_tables_cover_the_benchmark_spaces(target: str, space_name: str) -> None:
    from latency.targets import load_table
    space = get_space(space_name)
    table = load_table(target, space_name)
    assert set(table.entries) == {s.key for s in space.all_layers()}
    model = lut_model(target, space)
    archs = [space.parse_any(p) for p in space.presets] + [space.sample(np.random.default_rng(s)) for s in range(5)]
    assert all(0.001 < model.predict(a) < 1000.0 for a in archs)
    if target == "pixel1":
        from latency.devices import pixel1 as P
        for spec in space.all_layers():
            assert table.ms(spec.key) == pytest.approx(P.layer_ms(spec), rel=1e-9)
