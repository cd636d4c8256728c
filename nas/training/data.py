"""Small image datasets held in memory: `load_dataset(spec, split=..., seed=..., resolution=...)`.

Specs (what `--dataset` takes):

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, no download),
  upsampled to 32x32 and repeated to 3 channels; a seeded 80/20 train/val split. The default.
- `cifar10:PATH`: CIFAR-10 as distributed, either the python pickles (data_batch_1..5, test_batch)
  or the binary version (data_batch_1.bin..5, test_batch.bin; records of 1 label byte + 3072 pixel
  bytes). PATH is the folder holding the batches or its parent (cifar-10-batches-py/-bin). train =
  the data batches, val = the test batch. Pickles are read with an unpickler that only accepts
  numpy arrays, so a hostile file cannot run code.
- `imagefolder:PATH`: one sub-folder of PNG/JPEG images per class. PATH/train and PATH/val (each
  with class folders) are used as the splits when present; otherwise a seeded, per-class 80/20
  split of all images.
- `shapes`: a generated task of 10 classes of shapes and textures at 32x32 (`nas.training.shapes`), 2,000
  train / 1,000 val images; `shapes:N` sets the training images (10..50,000; val N // 2). Seeded.
  `shapes2` / `shapes2:N`: version 2 of the same task (grey, the form always lighter than the ground):
  learnt in a few epochs (`nas bench ranking`'s default). `shapes3` / `shapes3:N`: version 3 (graded contrast
  and noise per image, coarser textures); not shown to rank archs more repeatably than version 2.
- `synthetic`: seeded random class templates plus noise (10 classes, 3x32x32, 512 train / 128 val
  images); learnable, for tests. `synthetic:N` sets the number of training images.

Images come back as float32 NCHW tensors normalised per channel, labels as int64 tensors.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.core.errors import UsageError

if TYPE_CHECKING:
    import torch

SPLITS = ("train", "val")
VALID_SPECS = "digits, shapes, shapes:N, shapes2, shapes2:N, shapes3, shapes3:N, synthetic, synthetic:N, cifar10:PATH, imagefolder:PATH"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VAL_FRACTION = 0.2
#: per-channel statistics used for normalisation (CIFAR-10 train set; ImageNet for image folders)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Spec:
    kind: str
    arg: str = ""


def parse_spec(spec: str) -> Spec:
    kind, _, arg = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind in ("digits",) and not arg:
        return Spec(kind)
    if kind == "synthetic":
        if arg and not (arg.isdigit() and int(arg) >= 10):
            raise UsageError(f"dataset {spec!r}: synthetic:N needs a whole number N >= 10; valid specs: {VALID_SPECS}")
        return Spec(kind, arg)
    if kind in ("shapes", "shapes2", "shapes3"):
        from nas.training.shapes import MAX_TRAIN
        if arg and not (arg.isdigit() and len(arg) <= 6 and 10 <= int(arg) <= MAX_TRAIN):
            raise UsageError(f"dataset {spec!r}: {kind}:N needs a whole number N in 10..{MAX_TRAIN}; "
                             f"valid specs: {VALID_SPECS}")
        return Spec(kind, arg)
    if kind in ("cifar10", "imagefolder") and arg:
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise UsageError(f"dataset {spec!r}: {arg} is not a folder")
        return Spec(kind, str(path))
    raise UsageError(f"unknown dataset {spec!r}; valid specs: {VALID_SPECS}")


def num_classes(spec: str) -> int:
    s = parse_spec(spec)
    if s.kind == "imagefolder":
        return len(_folder_classes(_imagefolder_root(Path(s.arg))))
    return 10


def native_resolution(spec: str, sample: int = 256) -> int:
    """The side (px) of the dataset's own images, before any resize: 8 for digits, 32 for CIFAR-10
    and synthetic; for an image folder the smallest side among up to `sample` images spread over it
    (headers only)."""
    s = parse_spec(spec)
    if s.kind != "imagefolder":
        return {"digits": 8, "synthetic": 32, "shapes": 32, "shapes2": 32, "shapes3": 32, "cifar10": 32}[s.kind]
    from PIL import Image
    root = _imagefolder_root(Path(s.arg))
    files, _ = _files(root, _folder_classes(root))
    if not files:
        raise UsageError(f"image folder {s.arg} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    picks = np.unique(np.linspace(0, len(files) - 1, min(sample, len(files))).round().astype(int))
    sides = []
    for i in picks:
        with Image.open(files[i]) as im:
            sides.append(min(im.size))
    return int(min(sides))


# ---- public loaders -----------------------------------------------------------------------------
def load_dataset(spec: str, *, split: str, seed: int = 0, resolution: int | None = None,
                 limit: int | None = None) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Images (float32 N x 3 x R x R, normalised) and labels (int64) of `split` ("train" or "val").
    `seed` picks the train/val split where the dataset has none; `resolution` resizes (None: the
    dataset's own size); `limit` keeps a seeded random subset of that many images."""
    import torch
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if resolution is not None and int(resolution) < 1:
        raise UsageError(f"resolution must be positive, got {resolution}")
    s = parse_spec(spec)
    loader = {"digits": _digits, "synthetic": _synthetic, "shapes": _shapes, "shapes2": _shapes, "shapes3": _shapes, "cifar10": _cifar10,
              "imagefolder": _imagefolder}[s.kind]
    x, y, mean, std = loader(s, split, seed, resolution)
    if limit is not None and int(limit) < len(y):
        keep = np.sort(np.random.default_rng([seed, 0x117]).permutation(len(y))[:int(limit)])
        x, y = x[keep], y[keep]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if resolution is not None and xt.shape[-1] != int(resolution):
        xt = resize(xt, int(resolution))
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (xt - m) / sd, torch.from_numpy(np.asarray(y, dtype=np.int64))


def resize(x: "torch.Tensor", resolution: int) -> "torch.Tensor":
    """Bilinear resize of an NCHW batch to resolution x resolution (antialiased when shrinking)."""
    import torch.nn.functional as F
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                         antialias=resolution < x.shape[-1])


def make_loader(x: "torch.Tensor", y: "torch.Tensor", *, batch_size: int, shuffle: bool, seed: int = 0,
                drop_last: bool = False) -> "torch.utils.data.DataLoader[Any]":
    """A DataLoader over in-memory tensors that indexes whole batches at once (no per-sample
    collation), shuffled by its own seeded generator."""
    import torch
    from torch.utils.data import (
        BatchSampler,
        DataLoader,
        RandomSampler,
        SequentialSampler,
        TensorDataset,
    )
    if int(batch_size) < 1:
        raise UsageError(f"batch_size must be positive, got {batch_size}")
    ds = TensorDataset(x, y)
    gen = torch.Generator().manual_seed(seed)
    base = RandomSampler(ds, generator=gen) if shuffle else SequentialSampler(ds)
    # the loader draws a base seed per epoch: from its own generator, not torch's global one
    return DataLoader(ds, sampler=BatchSampler(base, int(batch_size), drop_last), batch_size=None, generator=gen)


# ---- digits / synthetic ---------------------------------------------------------------------------
def _split_indices(labels: np.ndarray, split: str, seed: int) -> np.ndarray:
    """Seeded per-class 80/20 split: the same seed gives disjoint train and val index sets."""
    rng = np.random.default_rng([seed, 0xD1])
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val.append(idx[:max(1, int(round(len(idx) * VAL_FRACTION)))])
    if not val:  # no samples at all (e.g. class folders without images): empty splits
        return np.zeros(0, dtype=np.int64)
    val_idx = np.sort(np.concatenate(val))
    if split == "val":
        return val_idx
    return np.setdiff1d(np.arange(len(labels)), val_idx)


def _digits(s: Spec, split: str, seed: int, resolution: int | None) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    import torch
    from sklearn.datasets import load_digits
    d = load_digits()
    idx = _split_indices(d.target, split, seed)
    img = torch.from_numpy(d.images[idx].astype(np.float32) / 16.0).unsqueeze(1)
    img = resize(img, 32 if resolution is None else max(int(resolution), 8)).repeat(1, 3, 1, 1)
    # statistics of the whole bundled set after upsampling (fixed numbers, any split or seed)
    return img.numpy(), d.target[idx], (0.3053,) * 3, (0.3236,) * 3


def _synthetic(s: Spec, split: str, seed: int, resolution: int | None) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    n_train = int(s.arg) if s.arg else 512
    n = n_train if split == "train" else max(10, n_train // 4)
    # class templates are part of the dataset's identity (fixed); samples depend on seed and split
    templates = np.random.default_rng(0x5EED).normal(0.0, 1.0, (10, 3, 8, 8)).repeat(4, axis=2).repeat(4, axis=3)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    y = np.arange(n) % 10
    rng.shuffle(y)
    x = templates[y] + rng.normal(0.0, 1.0, (n, 3, 32, 32))
    return x.astype(np.float32), y, (0.0,) * 3, (1.4,) * 3


def _shapes(s: Spec, split: str, seed: int, resolution: int | None) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    from nas.training.shapes import DEFAULT_TRAIN, MEAN, STD, generate, val_size
    n_train = int(s.arg) if s.arg else DEFAULT_TRAIN
    x, y = generate(n_train if split == "train" else val_size(n_train), seed, SPLITS.index(split),
                    version={"shapes": 1, "shapes2": 2, "shapes3": 3}[s.kind])
    return x, y, MEAN, STD


# ---- CIFAR-10 ---------------------------------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Accepts only what a CIFAR batch holds: dicts, lists, bytes, numbers and numpy arrays."""

    _ALLOWED = {("_codecs", "encode"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")
        return super().find_class(module, name)


def _cifar_dir(root: Path) -> tuple[Path, str]:
    for folder in (root, root / "cifar-10-batches-py", root / "cifar-10-batches-bin"):
        if (folder / "data_batch_1").is_file():
            return folder, "py"
        if (folder / "data_batch_1.bin").is_file():
            return folder, "bin"
    raise UsageError(f"no CIFAR-10 batches in {root}: expected data_batch_1..5 + test_batch (python pickles) or "
                     f"data_batch_1.bin..5 + test_batch.bin (binary), there or in cifar-10-batches-py/-bin")


def _read_cifar_file(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    if fmt == "bin":
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size % 3073:
            raise UsageError(f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a multiple of "
                             f"3073 (1 label byte + 3072 pixel bytes)")
        rec = raw.reshape(-1, 3073)
        return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)
    try:
        d = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data, labels = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as exc:
        raise UsageError(f"{path} is not a CIFAR-10 python batch (a pickled dict with b'data' and b'labels'): "
                         f"{exc}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise UsageError(f"{path}: b'data' must be N x 3072 bytes with N labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar10(s: Spec, split: str, seed: int, resolution: int | None) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    folder, fmt = _cifar_dir(Path(s.arg))
    ext = ".bin" if fmt == "bin" else ""
    names = [f"data_batch_{i}{ext}" for i in range(1, 6)] if split == "train" else [f"test_batch{ext}"]
    paths = [folder / n for n in names if (folder / n).is_file()]
    if not paths:
        raise UsageError(f"{folder} has no {names[0]} (needed for the {split} split)")
    parts = [_read_cifar_file(p, fmt) for p in paths]
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
    y = np.concatenate([p[1] for p in parts])
    if y.size and (y.min() < 0 or y.max() > 9):
        raise UsageError(f"CIFAR-10 labels in {folder} must be 0..9, got {int(y.min())}..{int(y.max())}")
    return x, y, CIFAR_MEAN, CIFAR_STD


# ---- image folders ---------------------------------------------------------------------------------
def _folder_classes(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UsageError(f"image folder {root} has no class sub-folders (expected {root}/<class>/<image>.png)")
    return classes


def _imagefolder_root(root: Path) -> Path:
    return root / "train" if (root / "train").is_dir() and (root / "val").is_dir() else root


def _files(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for c, name in enumerate(classes):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [c] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _imagefolder(s: Spec, split: str, seed: int, resolution: int | None) -> tuple[np.ndarray, np.ndarray, Any, Any]:
    from PIL import Image
    root = Path(s.arg)
    classes = _folder_classes(_imagefolder_root(root))
    if _imagefolder_root(root) != root:
        files, labels = _files(root / split, classes)
    else:
        files, labels = _files(root, classes)
        idx = _split_indices(labels, split, seed)
        files, labels = [files[i] for i in idx], labels[idx]
    if not files:
        raise UsageError(f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} images for the {split} split")
    arrays, size = [], None
    for f in files:
        with Image.open(f) as opened:
            im = opened.convert("RGB")
        if resolution is not None:
            im = im.resize((int(resolution), int(resolution)), Image.Resampling.BILINEAR)
        elif size is None:
            size = im.size
        elif im.size != size:
            raise UsageError(f"images in {root} differ in size ({files[0].name}: {size[0]}x{size[1]}, "
                             f"{f.name}: {im.size[0]}x{im.size[1]}); pass a resolution to resize them")
        arrays.append(np.asarray(im, dtype=np.uint8))
    x = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return x, labels, IMAGENET_MEAN, IMAGENET_STD
