"""`shapes`: a generated 32x32 image task (10 classes of shapes and textures), made on the fly from a seed.

Why: the embedded digits are too easy and too small to rank archs (two training seeds of the same
31 archs agreed at Kendall 0.14 there), and no image data may be downloaded at run time. This task is
a generator, not files: every image is drawn from a seeded numpy generator, so the same (seed, split,
n) gives the same images on every machine.

Classes (the object's *form* is the label; everything else varies per image):

====  =====================  ====  ==============================================
0     filled disc            5     stripes, near-horizontal, in a disc
1     filled square          6     stripes, near-vertical, in a disc
2     filled triangle        7     checkerboard in a disc
3     plus-shaped cross      8     dot grid in a disc
4     ring (annulus)         9     concentric rings (target) in a disc
====  =====================  ====  ==============================================

Per image: random centre (within 6 px of the middle), size (radius 6-11 px), rotation (shapes; +-25
degrees for the stripes), stripe / checker period (3-6 px), foreground and background colours (the
contrast sign varies), a smooth random background (sum of 3 random low-frequency waves), one distractor
blob, and pixel noise. The classes differ in form and texture, which small nets learn at different rates.

Versions (`generate(..., version=)`; the dataset specs `shapes[:N]`, `shapes2[:N]`, `shapes3[:N]`): 1 as above, in
random colours whose contrast may have either sign - the nets of `nats_sss` learn it slowly, so after a
few epochs two training seeds of the same 18-30 archs agreed only at Kendall 0.23-0.35 (issue 30). 2 is
the same forms and clutter in grey, the form always lighter than its ground (foreground 0.65-1.0,
ground 0-0.35), noise shared by the channels: learnt in a few epochs, and width still matters (at 16 px,
3 epochs of 2,000 images: 8:8:8:8:8 about 47 %, 24:24:24:24:24 about 87 %). But two seeds of a mixed-width
arch often differ by about a class's worth (16:24:8:64:16: 86 / 72 %), 6 points at the median. 3 (`shapes3`) grades the difficulty per image instead:
the form is 0.15-0.65 lighter than its ground (not 0.3-1.0), the noise level is drawn per image (sd
0.04-0.25), and the textures are coarser (period 5.5-9 px, not 4-7: no aliasing at 16 px); on the same
archs and seeds the seed noise fell from 6.6 points to under 1 (`benchmarks/ranking_pilot.py`, 3-4 archs), but on
30 archs it was 4.8 points against a spread of 10.3, the ratio version 2 had (README, "Measuring supernet
ranking"). Each version's images are pinned by a hash test (tests/test_shapes3.py).

Sizes: `shapes` = 2,000 train + 1,000 val images; `shapes:N` sets the training images (N in 10..50,000;
val = max(10, N // 2)). Train and val come from disjoint streams of the generator.
"""
from __future__ import annotations

import numpy as np

CLASSES = ("disc", "square", "triangle", "cross", "ring", "stripes_h", "stripes_v", "checker", "dots", "target")
SIDE = 32
DEFAULT_TRAIN = 2000
MAX_TRAIN = 50_000
VERSIONS = (1, 2, 3)
#: the images come out already scaled ((pixel - 0.5) / 0.5): the loader's normalisation is the identity
MEAN, STD = (0.0,) * 3, (1.0,) * 3


def val_size(n_train: int) -> int:
    return max(10, n_train // 2)


def generate(n: int, seed: int, split: int = 0, version: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (float32 n x 3 x 32 x 32, values about in [-1.5, 1.5]) and labels (balanced, shuffled).
    `split` (0 train, 1 val) picks a disjoint stream of the generator; `version` (VERSIONS) the look."""
    if not 0 <= int(n) <= MAX_TRAIN * 2:
        raise ValueError(f"shapes: n {n} outside [0, {MAX_TRAIN * 2}]")
    if version not in VERSIONS:
        raise ValueError(f"shapes: version {version!r} is not one of {VERSIONS}")
    rng = np.random.default_rng([int(seed), int(split), 0x5A9E5] + ([] if version == 1 else [version]))
    y = np.arange(n) % len(CLASSES)
    rng.shuffle(y)
    x = np.empty((n, 3, SIDE, SIDE), dtype=np.float32)
    grid = np.arange(SIDE, dtype=np.float64) + 0.5
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    for i in range(n):
        x[i] = _image(int(y[i]), rng, gx, gy, version)
    return x, y.astype(np.int64)


def _image(label: int, rng: np.random.Generator, gx: np.ndarray, gy: np.ndarray, version: int = 1) -> np.ndarray:
    cx, cy = SIDE / 2 + rng.uniform(-4, 4, 2)
    r = rng.uniform(8.0, 12.0)
    theta = rng.uniform(0, 2 * np.pi)
    dx, dy = gx - cx, gy - cy
    u = dx * np.cos(theta) + dy * np.sin(theta)         # rotated coordinates
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    dist = np.hypot(dx, dy)
    disc = dist <= r
    period = rng.uniform(4.0, 7.0) if version < 3 else rng.uniform(5.5, 9.0)   # v3: no aliasing at 16 px
    phase = rng.uniform(0, 2 * np.pi)
    if label == 0:
        mask = disc
    elif label == 1:
        mask = (np.abs(u) <= r * 0.8) & (np.abs(v) <= r * 0.8)
    elif label == 2:   # equilateral triangle: inside three half-planes
        mask = np.ones_like(disc)
        for k in range(3):
            a = theta + k * 2 * np.pi / 3
            mask &= dx * np.cos(a) + dy * np.sin(a) <= r * 0.5
    elif label == 3:
        w = r * 0.3
        mask = ((np.abs(u) <= w) & (np.abs(v) <= r)) | ((np.abs(v) <= w) & (np.abs(u) <= r))
    elif label == 4:
        mask = disc & (dist >= r * 0.55)
    elif label in (5, 6):
        a = rng.uniform(-25, 25) * np.pi / 180 + (np.pi / 2 if label == 6 else 0.0)
        coord = -dx * np.sin(a) + dy * np.cos(a)
        mask = disc & (np.sin(2 * np.pi * coord / period + phase) > 0)
    elif label == 7:
        mask = disc & ((np.floor(u / period) + np.floor(v / period)) % 2 == 0)
    elif label == 8:
        mask = disc & (np.hypot((u % period) - period / 2, (v % period) - period / 2) <= period * 0.3)
    else:
        mask = disc & (np.sin(2 * np.pi * dist / period + phase) > 0)
    if version == 2:   # grey, the form always lighter than the ground
        fg, bg = np.full(3, rng.uniform(0.65, 1.0)), np.full(3, rng.uniform(0.0, 0.35))
    elif version == 3:   # grey, lighter form, graded contrast (and graded noise below)
        b = rng.uniform(0.0, 0.35)
        fg, bg = np.full(3, b + rng.uniform(0.15, 0.65)), np.full(3, b)
    else:
        fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if np.abs(fg - bg).mean() < 0.35:   # keep some contrast, either sign
            fg = np.clip(bg + np.where(bg < 0.5, 1.0, -1.0) * rng.uniform(0.4, 0.6, 3), 0, 1)
    background = np.zeros_like(gx)
    for _ in range(3):   # smooth clutter
        k = rng.uniform(0.05, 0.3, 2)
        background += rng.uniform(0.02, 0.06) * np.sin(2 * np.pi * (k[0] * gx + k[1] * gy) / 4 + rng.uniform(0, 6.3))
    tint = rng.uniform(0.5, 1.5, 3) if version == 1 else np.full(3, rng.uniform(0.5, 1.5))
    img = bg[:, None, None] + background[None] * tint[:, None, None]
    img = np.where(mask[None], fg[:, None, None], img)
    if version == 1:
        img = img + rng.normal(0.0, 0.08, img.shape)
    else:   # noise shared by the channels; v3: its level graded per image
        img = img + rng.normal(0.0, 0.08 if version == 2 else rng.uniform(0.04, 0.25), img.shape[1:])[None]
    return ((img - 0.5) / 0.5).astype(np.float32)


__all__ = ["CLASSES", "DEFAULT_TRAIN", "MAX_TRAIN", "VERSIONS", "generate", "val_size"]
