"""Datasets: tiny files written in the real formats (CIFAR-10 pickles and binary records, PNG
folders), loaded back pixel for pixel; seeded splits; bad specs name the valid ones."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.training.data import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_dataset,
    make_loader,
    num_classes,
)
from nas.core.errors import UsageError


def denorm(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    m, s = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    return np.rint(((x * s + m) * 255).numpy()).astype(np.int64)


# ---- digits / synthetic ---------------------------------------------------------------------------
def test_digits_split_is_seeded_disjoint_and_complete() -> None:
    xt, yt = load_dataset("digits", split="train", seed=0)
    xv, yv = load_dataset("digits", split="val", seed=0)
    assert xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert xt.shape[1:] == (3, 32, 32) and len(xt) + len(xv) == 1797      # sklearn's 1797 digits
    assert torch.equal(xt[:, 0], xt[:, 1]) and set(yt.tolist()) == set(range(10))
    assert abs(float(xt.mean())) < 0.05 and abs(float(xt.std()) - 1) < 0.05
    rows = {tuple(r.tolist()) for r in xt[:, 0, ::4, ::4].reshape(len(xt), -1)}
    assert not any(tuple(r.tolist()) in rows for r in xv[:, 0, ::4, ::4].reshape(len(xv), -1)[:50])
    assert torch.equal(load_dataset("digits", split="val", seed=0)[1], yv)
    assert not torch.equal(load_dataset("digits", split="val", seed=1)[1], yv)
    small, _ = load_dataset("digits", split="val", seed=0, resolution=16, limit=10)
    assert small.shape == (10, 3, 16, 16)
    assert num_classes("digits") == 10


def test_synthetic_sizes_and_determinism() -> None:
    x, y = load_dataset("synthetic:40", split="train", seed=3)
    assert x.shape == (40, 3, 32, 32) and sorted(y.bincount().tolist()) == [4] * 10
    assert torch.equal(x, load_dataset("synthetic:40", split="train", seed=3)[0])
    assert load_dataset("synthetic", split="val", seed=0, resolution=8)[0].shape == (128, 3, 8, 8)


# ---- CIFAR-10 -----------------------------------------------------------------------------------------
def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()


def write_pickles(folder: Path, n: int = 3) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True)
    files = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        data, labels = cifar_arrays(n, i)
        with open(folder / name, "wb") as fh:  # the official files are protocol-2 pickles with bytes keys
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data}, fh, protocol=2)
        files[name] = (data, labels)
    return files


def test_cifar10_python_pickles(tmp_path: Path) -> None:
    files = write_pickles(tmp_path / "cifar-10-batches-py")
    x, y = load_dataset(f"cifar10:{tmp_path}", split="train", seed=0)      # parent folder is found too
    assert x.shape == (15, 3, 32, 32) and y.tolist() == sum((files[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    pixels = denorm(x, CIFAR_MEAN, CIFAR_STD)
    data = files["data_batch_1"][0]
    # row layout: 1024 red bytes (row-major 32x32), then green, then blue
    assert pixels[0, 0, 0, 1] == data[0, 1] and pixels[0, 1, 0, 0] == data[0, 1024] and pixels[2, 2, 31, 31] == data[2, 3071]
    xv, yv = load_dataset(f"cifar10:{tmp_path / 'cifar-10-batches-py'}", split="val", seed=0)
    assert yv.tolist() == files["test_batch"][1] and (denorm(xv, CIFAR_MEAN, CIFAR_STD).reshape(3, -1) ==
                                                       files["test_batch"][0]).all()


def test_cifar10_binary_records(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    expected = {}
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        data, labels = cifar_arrays(2, len(expected))
        rec = np.concatenate([np.array(labels, dtype=np.uint8)[:, None], data], axis=1)  # 1 label byte + 3072
        rec.tofile(folder / name)
        expected[name] = (data, labels)
    xv, yv = load_dataset(f"cifar10:{tmp_path}", split="val", seed=0, resolution=None)
    assert yv.tolist() == expected["test_batch.bin"][1]
    assert (denorm(xv, CIFAR_MEAN, CIFAR_STD).reshape(2, -1) == expected["test_batch.bin"][0]).all()
    xt, _ = load_dataset(f"cifar10:{folder}", split="train", seed=0, resolution=16)
    assert xt.shape == (10, 3, 16, 16)
    (folder / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(UsageError, match="3073"):
        load_dataset(f"cifar10:{folder}", split="val", seed=0)


class Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo pwned > /dev/null",))


def test_cifar10_pickle_cannot_run_code(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    write_pickles(folder, n=1)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": Evil(), b"labels": [0]}, fh)
    with pytest.raises(UsageError, match="refusing to load posix.system|refusing to load os.system"):
        load_dataset(f"cifar10:{folder}", split="val", seed=0)


def test_cifar10_missing_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="data_batch_1.bin"):
        load_dataset(f"cifar10:{tmp_path}", split="train", seed=0)


# ---- image folders --------------------------------------------------------------------------------
def write_pngs(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 12), seed: int = 0) -> None:
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_imagefolder_seeded_split(tmp_path: Path) -> None:
    write_pngs(tmp_path, {"cat": 5, "dog": 5, "eel": 5})
    (tmp_path / "notes.txt").write_text("ignored")
    xt, yt = load_dataset(f"imagefolder:{tmp_path}", split="train", seed=0)
    xv, yv = load_dataset(f"imagefolder:{tmp_path}", split="val", seed=0)
    assert xt.shape == (12, 3, 12, 12) and xv.shape == (3, 3, 12, 12)
    assert yt.bincount().tolist() == [4, 4, 4] and sorted(yv.tolist()) == [0, 1, 2]
    from PIL import Image
    first = sorted((tmp_path / "cat").iterdir())
    pixels = denorm(torch.cat([xt, xv]), IMAGENET_MEAN, IMAGENET_STD)
    img = np.asarray(Image.open(first[0])).transpose(2, 0, 1)
    assert any((p == img).all() for p in pixels)
    assert num_classes(f"imagefolder:{tmp_path}") == 3
    assert load_dataset(f"imagefolder:{tmp_path}", split="train", seed=0, resolution=8)[0].shape == (12, 3, 8, 8)


def test_imagefolder_train_val_folders_and_size_mismatch(tmp_path: Path) -> None:
    write_pngs(tmp_path / "train", {"a": 2, "b": 3})
    write_pngs(tmp_path / "val", {"a": 1, "b": 1}, seed=1)
    assert load_dataset(f"imagefolder:{tmp_path}", split="val", seed=0)[1].tolist() == [0, 1]
    assert len(load_dataset(f"imagefolder:{tmp_path}", split="train", seed=0)[1]) == 5
    write_pngs(tmp_path / "train", {"b": 1}, size=(20, 10), seed=2)  # overwrites b/0.png with another size
    with pytest.raises(UsageError, match="differ in size.*resolution"):
        load_dataset(f"imagefolder:{tmp_path}", split="train", seed=0)
    assert load_dataset(f"imagefolder:{tmp_path}", split="train", seed=0, resolution=6)[0].shape == (5, 3, 6, 6)


# ---- specs and loaders ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["mnist", "cifar10", "imagefolder:", "digits:3", "synthetic:x"])
def test_bad_specs_name_the_valid_ones(spec: str) -> None:
    with pytest.raises(UsageError, match="digits, shapes, shapes:N, shapes2, shapes2:N, shapes3, shapes3:N, synthetic.*cifar10:PATH, imagefolder:PATH"):
        load_dataset(spec, split="train", seed=0)


def test_bad_split_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="valid splits: train, val"):
        load_dataset("digits", split="test", seed=0)
    with pytest.raises(UsageError, match="not a folder"):
        load_dataset(f"cifar10:{tmp_path / 'nope'}", split="train", seed=0)


def test_make_loader_batches_and_seeded_shuffle() -> None:
    x, y = torch.arange(10.0).view(10, 1), torch.arange(10)
    batches = list(make_loader(x, y, batch_size=4, shuffle=True, seed=1))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(10))
    assert torch.equal(torch.cat([b[0][:, 0] for b in batches]).long(), torch.cat([b[1] for b in batches]))
    again = list(make_loader(x, y, batch_size=4, shuffle=True, seed=1))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert [b[1].tolist() for b in make_loader(x, y, batch_size=5, shuffle=False)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
