"""What a training run will allocate, estimated before it starts, and refused when this machine lacks it.

`nas train -o resolution=1024 --batch-size 64` and `--dataset synthetic:1000000000000` ended in allocator
tracebacks (after the dataset was half made). The estimate is coarse but on the safe side of what
matters: the dataset held in memory as float32 (synthetic images are drawn at 32 px in float64 first),
and the activations of one batch kept for the backward pass (every layer's output, x3 for the
gradients and the optimizer's working copies). It is compared with the memory the system says is
available (MemAvailable), so a run that would thrash or be killed is refused with the sizes.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from nas.core.errors import UsageError
from nas.core.system import available_bytes

if TYPE_CHECKING:
    from nas.core.arch import Arch
    from nas.core.space import SearchSpace

#: images of the datasets whose size is known without reading them (train split)
KNOWN_IMAGES = {"digits": 1797}
#: the backward pass keeps each layer's output; gradients and workspace about double it again
ACTIVATION_FACTOR = 3


def dataset_images(dataset: str, limit: int | None = None) -> int:
    from nas.training.data import parse_spec
    spec = parse_spec(dataset)
    if spec.kind == "synthetic":
        n = int(spec.arg) if spec.arg else 512
        n += max(10, n // 4)   # the val split
    elif spec.kind == "shapes":
        n = int(spec.arg) if spec.arg else 2000
        n += max(10, n // 2)
    elif spec.kind == "cifar10":
        n = _cifar_images(spec.arg)
    else:
        n = KNOWN_IMAGES.get(spec.kind, 0)   # an image folder: not counted (read lazily per class)
    return min(n, limit) if limit else n


def _cifar_images(root: str) -> int:
    """Images in the train batches, from their sizes (3,073 bytes an image, either format): a folder
    that is not CIFAR-10 counts 0 here, so the loader's own error names what is wrong with it."""
    from pathlib import Path

    from nas.training.data import _cifar_dir
    try:
        folder, fmt = _cifar_dir(Path(root))
    except UsageError:
        return 0
    ext = ".bin" if fmt == "bin" else ""
    files = [folder / f"data_batch_{i}{ext}" for i in range(1, 6)]
    return sum(f.stat().st_size for f in files if f.is_file()) // 3073


def estimate(space: "SearchSpace", arch: "Arch", dataset: str, batch: int, limit: int | None = None
             ) -> dict[str, int]:
    """Bytes of the dataset in memory and of one batch's activations (see the module doc)."""
    from nas.training.data import parse_spec
    res = int(space.input_shape[-1])
    per_image = 4 * math.prod(space.input_shape)
    if parse_spec(dataset).kind == "synthetic":
        per_image += 3 * 32 * 32 * 12   # drawn at 32 px in float64, then a float32 copy
    data = dataset_images(dataset, limit) * per_image
    outputs = sum(math.prod(layer.output_shape) for layer in space.layers(arch))
    return {"dataset": data, "activations": ACTIVATION_FACTOR * 4 * batch * outputs, "resolution": res}


def _gb(n: float) -> str:
    return f"{n / 2 ** 30:.1f} GB" if n >= 2 ** 30 / 10 else f"{n / 2 ** 20:.0f} MB"


def check_memory(space: "SearchSpace", arch: "Arch", dataset: str, batch: int, device: str = "cpu",
                 limit: int | None = None, available: int | None = None) -> dict[str, int]:
    """Refuse (UsageError, with the sizes) a run whose estimate exceeds the available memory; on
    CUDA the activations are on the GPU, so only the dataset counts here."""
    need = estimate(space, arch, dataset, batch, limit)
    total = need["dataset"] + (0 if str(device).startswith("cuda") else need["activations"])
    have = available_bytes() if available is None else available
    if have is not None and total > have:
        raise UsageError(
            f"training would need about {_gb(total)} of memory (dataset {dataset}: {_gb(need['dataset'])} at "
            f"{need['resolution']} px; activations of a batch of {batch}: {_gb(need['activations'])}) and this "
            f"machine has {_gb(have)} available; lower --batch-size, -o resolution or the dataset size")
    return need
