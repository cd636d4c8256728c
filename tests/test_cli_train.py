"""`nas train` through the CLI: a real short run, and every bad input ends in one clear line (exit 2),
no traceback and no checkpoint."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from nas.cli.main import main

ARCH = "k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3"
SMALL = ["-o", "resolution=32", "-o", "width_mult=0.25"]


def nas(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def best(tmp_path: Path) -> Path:
    """A best.json as 'nas search' writes it (searched at 224 px for 1000 classes)."""
    path = tmp_path / "best.json"
    path.write_text(json.dumps({"space": "mbconv", "arch": ARCH, "space_options": {"resolution": 224}}))
    return path


def test_train_a_result_at_a_smaller_size(best: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, text, err = nas(capsys, "train", str(best), *SMALL, "--dataset", "synthetic:300", "--epochs", "4",
                          "--batch-size", "20", "--seed", "3", "--out", str(out), "--quiet", "--json")
    assert code == 0, err
    res = json.loads(text)
    assert res["accuracy"] > 0.8 and res["epochs"] == 4 and res["world_size"] == 1
    assert res["differs_from_searched"] == {"num_classes": [1000, 10], "resolution": [224, 32],
                                            "width_mult": [1.0, 0.25]}
    assert res["config"]["label_smoothing"] == 0.1 and res["config"]["augment"] == "auto"
    assert max(res["onnx_max_abs_diff"].values()) < 1e-3
    # checkpoint.pt.lock: the run lock of --out (flock; kept, as a search keeps trials.db.lock)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "checkpoint.pt.lock", "model.onnx", "model.pt",
                                                     "result.json"]
    # the written result is itself a result 'nas export' takes; the .pt keeps the trained weights
    code, text, _ = nas(capsys, "export", str(out / "model.pt"), "--format", "onnx", "--out", str(tmp_path))
    assert code == 0 and "weights from" in text and (tmp_path / "model.onnx").exists()
    # fine-tuning starts from the .pt's weights: one epoch at a negligible learning rate keeps the accuracy,
    # where the same epoch from random weights stays near chance
    tune = ["--dataset", "synthetic:300", "--epochs", "1", "--batch-size", "20", "--lr", "1e-6",
            "--warmup-epochs", "0", "--seed", "3", "--quiet", "--json"]
    code, text, err = nas(capsys, "train", str(out / "model.pt"), *tune, "--out", str(tmp_path / "tuned"))
    tuned = json.loads(text)
    assert code == 0 and tuned["init_tensors"][0] == tuned["init_tensors"][1] > 0
    assert tuned["accuracy"] > 0.8 and tuned["differs_from_searched"] == {}
    code, text, err = nas(capsys, "train", "--space", "mbconv", "--arch", ARCH, *SMALL, *tune)
    assert code == 0 and json.loads(text)["accuracy"] < 0.5 and json.loads(text)["init_tensors"] is None
    # running it again without --resume would overwrite a finished run: refused
    code, _, err = nas(capsys, "train", str(best), *SMALL, "--dataset", "synthetic:300", "--out", str(out))
    assert code == 2 and "pass --resume" in err


def _bad_cifar(tmp: Path) -> str:
    folder = tmp / "cifar"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({"not": "cifar"}))
    return f"cifar10:{folder}"


def _not_writable(tmp: Path) -> str:
    (tmp / "a-file").write_text("x")
    return str(tmp / "a-file" / "run")


def _empty(tmp: Path, *classes: str) -> Path:
    folder = tmp / "images"
    for c in classes:
        (folder / c).mkdir(parents=True)
    folder.mkdir(exist_ok=True)
    return folder


CASES = {
    "result of another space": (lambda t, b: [str(b), "--space", "nasnet"], "holds a mbconv arch, but --space is 'nasnet'"),
    "arch json of another space": (lambda t, b: ["--space", "nasnet", "--arch",
                                                  json.dumps({"space": "mbconv", "genes": ["k3e3"]})],
                                   "arch belongs to space 'mbconv', not 'nasnet'"),
    "block string of another space": (lambda t, b: ["--space", "nasnet", "--arch", ARCH], "nasnet block string needs"),
    "result and arch": (lambda t, b: [str(b), "--arch", ARCH], "either a result file or --arch"),
    "nothing to train": (lambda t, b: ["--space", "mbconv"], "or both --space and --arch"),
    "dataset path missing": (lambda t, b: [str(b), "--dataset", f"cifar10:{t}/nope"], "is not a folder"),
    "dataset wrong format": (lambda t, b: [str(b), "--dataset", _bad_cifar(t)], "is not a CIFAR-10 python batch"),
    "image folder without classes": (lambda t, b: [str(b), "--dataset", f"imagefolder:{_empty(t)}"],
                                     "no class sub-folders"),
    "image folder without images": (lambda t, b: [str(b), "--dataset", f"imagefolder:{_empty(t, 'cat', 'dog')}"],
                                    "holds no .png/.jpg/.jpeg images"),
    "unknown dataset": (lambda t, b: [str(b), "--dataset", "mnist"], "valid specs: digits"),
    "cuda without cuda": (lambda t, b: [str(b), "--device", "cuda"], "CUDA is not available on this machine"),
    "unknown device": (lambda t, b: [str(b), "--device", "tpu"], "valid devices: cpu, cuda, cuda:N"),
    "unwritable out": (lambda t, b: [str(b), "--out", _not_writable(t)], "cannot create the folder (Not a directory)"),
    "bad batch size": (lambda t, b: [str(b), "--batch-size", "0"], "batch_size must be a whole number >= 1"),
    "resume without checkpoint": (lambda t, b: [str(b), "--resume"], "no checkpoint.pt in"),
    "bad space option": (lambda t, b: [str(b), "-o", "resolution=8"], "resolution 8 outside [32, 1024]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case: str, best: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, needle = CASES[case]
    argv = make(tmp_path, best)
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    if "--dataset" not in argv:
        argv += ["--dataset", "synthetic:100"]
    if "nasnet" not in argv:
        argv += SMALL[2:]       # the mbconv net small enough to get to the error quickly
    code, out, err = nas(capsys, "train", *argv, "--epochs", "1", "--quiet")
    assert code == 2, err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.rglob("checkpoint.pt")) and not list(tmp_path.rglob("model.*"))


def test_ctrl_c_says_how_to_resume(best: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.training import retrain

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(retrain, "train_arch", interrupted)
    code, _, err = nas(capsys, "train", str(best), "--out", str(tmp_path / "run"), "--quiet")
    # stopped before the first epoch ended: no checkpoint, and it says so (issue 29, rough2)
    assert code == 130 and "no epoch had finished, nothing was saved" in err and "Traceback" not in err
    (tmp_path / "run").mkdir(exist_ok=True)
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"x")
    code, _, err = nas(capsys, "train", str(best), "--out", str(tmp_path / "run"), "--quiet", "--resume")
    assert code == 130 and "checkpoint.pt - run the same command again to continue" in err
