"""Standard training augmentation on in-memory NCHW batches: random crop after padding, horizontal flip.

The CIFAR recipe (pad 4 px of zeros = the mean colour after normalisation, crop back to 32 x 32, flip
half the images), scaled to any resolution (pad = resolution / 8). Flips are off for digits (a
mirrored 2 is not a 2). Every draw comes from an explicit torch.Generator.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas.core.errors import UsageError

if TYPE_CHECKING:
    import torch

MODES = ("auto", "none", "crop", "crop-flip")


def resolve(mode: str, dataset: str) -> str:
    """The mode `auto` stands for on `dataset`: crop-flip for natural images, crop for digits, none for synthetic."""
    if mode not in MODES:
        raise UsageError(f"unknown augmentation {mode!r}; valid: {', '.join(MODES)}")
    if mode != "auto":
        return mode
    kind = str(dataset).partition(":")[0].strip().lower()
    return {"cifar10": "crop-flip", "imagefolder": "crop-flip", "digits": "crop"}.get(kind, "none")


def augment(x: "torch.Tensor", mode: str, gen: "torch.Generator") -> "torch.Tensor":
    """A randomly cropped (and, for crop-flip, half mirrored) copy of batch `x`."""
    import torch
    import torch.nn.functional as F
    if mode == "none" or len(x) == 0:
        return x
    n, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    if mode == "crop-flip":
        flip = torch.rand(n, generator=gen) < 0.5
        out[flip] = out[flip].flip(-1)
    return out
