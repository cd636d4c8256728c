"""The size a weight-sharing search trains at (`train_size`), how it is reported, and fine-tuning the
inherited subnet with `nas train`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nas.cli.main import main
from nas.core.errors import UsageError
from nas.training.data import native_resolution
from nas.strategies.train_size import choose_train_space
from search_spaces.catalog import get_space

MB32 = get_space("mbconv", resolution=32, width_mult=0.35)
PROXY = {"resolution": 32, "width_mult": 0.25}


def _folder(root: Path, side: int) -> Path:
    from PIL import Image
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (side + i, side + 2 * i), (40 * i, 90, 10)).save(root / c / f"{i}.png")
    return root


def test_native_resolution_of_each_dataset(tmp_path: Path) -> None:
    assert native_resolution("digits") == 8 and native_resolution("synthetic:64") == 32
    assert native_resolution(f"imagefolder:{_folder(tmp_path / 'f', 40)}") == 40   # the smallest side


@pytest.mark.parametrize("space, dataset, mode, given, used, width, why", [
    (MB32, "synthetic:64", "auto", [], "searched", 0.35, "32 px, at least the searched resolution 32 px"),
    (get_space("mbconv", resolution=64, width_mult=0.35), "synthetic:64", "auto", [], "proxy", 0.25,
     "32 px, below the searched resolution 64 px"),
    (MB32, "digits", "auto", [], "proxy", 0.25, "digits images are 8 px"),
    (MB32, "synthetic:64", "auto", ["width_mult"], "proxy", 0.25, "proxy-size options given (width_mult)"),
    (MB32, "synthetic:64", "proxy", [], "proxy", 0.25, "train_size=proxy"),
    (MB32, "digits", "searched", [], "searched", 0.35, "train_size=searched"),
])
def test_choice_and_reason(space, dataset, mode, given, used, width, why) -> None:  # type: ignore[no-untyped-def]
    small, info = choose_train_space(space, dataset, mode, PROXY, given, classes=10)
    assert info["used"] == used and why in info["why"] and small.options()["width_mult"] == width
    assert small.options()["num_classes"] == 10 and small.decisions == space.decisions
    assert bool(info["differs"]) == (used == "proxy") and "num_classes" not in info["differs"]


def test_image_folder_at_or_above_the_searched_resolution_trains_there(tmp_path: Path) -> None:
    data = f"imagefolder:{_folder(tmp_path / 'f', 40)}"
    assert choose_train_space(MB32, data, "auto", PROXY, [], 2)[1]["used"] == "searched"
    assert choose_train_space(get_space("mbconv", resolution=64), data, "auto", PROXY, [], 2)[1]["used"] == "proxy"


def test_bad_train_size_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown train_size 'big'; valid: auto, proxy, searched"):
        choose_train_space(MB32, "digits", "big", PROXY, [], 10)
    with pytest.raises(UsageError, match="train_size=searched trains at the searched space's options; drop width"):
        choose_train_space(MB32, "digits", "searched", PROXY, ["width_mult"], 10)


def _search(tmp: Path, out: str, *extra: str) -> dict:  # type: ignore[type-arg]
    from latency.devices.pixel1 import build_table
    table = tmp / "mb.json"
    if not table.exists():
        build_table(MB32).save(table)
    code = main(["search", "--space", "mbconv", "-o", "resolution=32", "-o", "width_mult=0.35", "--target", str(table),
                 "--strategy", "supernet", "--dataset", "synthetic:64", "--epochs", "2", "--batch-size", "16",
                 "--trials", "2", "--strategy-option", "random_paths=1", "--strategy-option", "calib_batches=1",
                 "--strategy-option", "population=2", "--strategy-option", "sample_size=1", "--torch-threads", "1",
                 "--quiet", "--out", str(tmp / out), *extra])
    assert code == 0
    return json.loads((tmp / out / "best.json").read_text())


@pytest.mark.slow
def test_supernet_trains_at_the_searched_size_when_the_data_allows_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    best = _search(tmp_path, "auto")
    printed = capsys.readouterr().out
    assert best["training"]["train_size"]["used"] == "searched" and best["training"]["train_space"]["width_mult"] == 0.35
    ex = best["exports"]
    assert ex["train_size"] == "searched" and set(ex["trained_at"]) == {"num_classes"}
    assert ex["note"].startswith("subnet files are at the searched size") and "10 classes (searched 1000)" in ex["note"]
    assert ex["torch"].endswith("subnet.pt") and ex["onnx"].endswith("subnet.onnx")
    assert "trained at the searched size (synthetic:64 images are 32 px" in printed
    assert ex["built_at"] == {"resolution": 32, "width_mult": 0.35, "num_classes": 10}   # the size subnet.* have
    assert "subnet.onnx built at resolution=32 width_mult=0.35 num_classes=10" in printed
    proxy = _search(tmp_path, "proxy", "--strategy-option", "train_size=proxy")
    printed = capsys.readouterr().out
    assert proxy["exports"]["train_size"] == "proxy" and proxy["training"]["train_space"]["width_mult"] == 0.25
    assert proxy["exports"]["trained_at"]["width_mult"] == {"trained": 0.25, "searched": 0.35}
    assert "proxy size (width_mult above)" in proxy["exports"]["note"] and "trained at proxy size" in printed
    assert "subnet.onnx built at resolution=32 width_mult=0.25 num_classes=10" in printed


def test_nas_train_fine_tunes_the_inherited_subnet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """subnet.pt starts `nas train` from the supernet's weights: every tensor taken, and the first
    epoch's loss well below the same net's from random weights."""
    _search(tmp_path, "run")
    capsys.readouterr()
    common = ["--dataset", "synthetic:64", "--epochs", "1", "--batch-size", "16", "--lr", "0.001",
              "--warmup-epochs", "0", "--torch-threads", "1", "--quiet", "--json"]
    runs = {}
    for name, src in (("tuned", "run/subnet.pt"), ("scratch", "run/best.json")):
        assert main(["train", str(tmp_path / src), *common, "--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads(capsys.readouterr().out)
    tuned, scratch = runs["tuned"], runs["scratch"]
    assert tuned["init_tensors"][0] == tuned["init_tensors"][1] and scratch["init_tensors"] is None
    assert tuned["space_options"] == scratch["space_options"]   # the same net: searched size, 10 classes
    assert tuned["history"][0]["train_loss"] < scratch["history"][0]["train_loss"] - 0.1
