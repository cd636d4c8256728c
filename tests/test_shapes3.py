"""Issue 30: `shapes3`, version 3 of the generated task (graded contrast and noise, coarser textures);
versions 1 and 2 unchanged, each pinned by the hash of its first images."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from nas.core.errors import UsageError
from nas.training.data import load_dataset, num_classes, parse_spec
from nas.training.shapes import generate

HASHES = {1: "d07c79fd625e90761b7fea73fca44170", 2: "6ce1db78925d2bc33b10a984bddb2c0b",
          3: "0e4cbe068085638110627c6321f448c2"}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_every_version_is_pinned_by_its_hash(version: int) -> None:
    x, y = generate(20, 0, version=version)
    assert hashlib.md5(x.tobytes()).hexdigest() == HASHES[version]
    assert sorted(np.bincount(y)) == [2] * 10


def test_version_3_is_grey_lighter_in_the_form_with_graded_contrast() -> None:
    x, y = generate(200, 5, version=3)
    assert np.array_equal(x, generate(200, 5, version=3)[0])
    assert np.array_equal(x[:, 0], x[:, 2])                        # grey
    disc = x[y == 0][:, 0]
    contrast = disc[:, 14:18, 14:18].mean((1, 2)) - disc[:, :3, :3].mean((1, 2))
    assert (contrast > 0).all()                                    # the form is lighter than its ground
    v2 = generate(200, 5, version=2)
    d2 = v2[0][v2[1] == 0][:, 0]
    c2 = d2[:, 14:18, 14:18].mean((1, 2)) - d2[:, :3, :3].mean((1, 2))
    assert contrast.mean() < c2.mean() and contrast.min() < c2.min()   # graded contrast: some images faint


def test_shapes3_spec() -> None:
    x, y = load_dataset("shapes3:20", split="val", seed=0, resolution=16)
    assert tuple(x.shape) == (10, 3, 16, 16) and num_classes("shapes3") == 10
    with pytest.raises(UsageError, match="shapes3:N needs a whole number"):
        parse_spec("shapes3:5")
    with pytest.raises(UsageError, match="shapes3, shapes3:N"):
        parse_spec("shapes4")
