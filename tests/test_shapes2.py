"""Issue 30: `shapes2`, version 2 of the generated task (grey, form lighter than ground); version 1 unchanged."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from nas.core.errors import UsageError
from nas.training.data import load_dataset, parse_spec
from nas.training.shapes import generate


def test_version_1_images_are_unchanged() -> None:
    x, y = generate(20, 0)
    assert hashlib.md5(x.tobytes()).hexdigest() == "d07c79fd625e90761b7fea73fca44170"   # before versions existed
    assert sorted(np.bincount(y)) == [2] * 10


def test_version_2_is_seeded_grey_and_lighter_in_the_form() -> None:
    x, y = generate(40, 3, version=2)
    x2, y2 = generate(40, 3, version=2)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, generate(40, 4, version=2)[0])          # another seed, other images
    assert not np.array_equal(x, generate(40, 3, version=1)[0])
    assert np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 1], x[:, 2])   # grey
    assert sorted(np.bincount(y)) == [4] * 10
    disc = x[y == 0][:, 0]   # filled disc: the centre pixel (the form) is lighter than the corner (ground)
    assert (disc[:, 14:18, 14:18].mean((1, 2)) > disc[:, :3, :3].mean((1, 2))).all()
    with pytest.raises(ValueError, match="version"):
        generate(4, 0, version=4)


def test_shapes2_spec_sizes_and_errors() -> None:
    x, y = load_dataset("shapes2:20", split="val", seed=0, resolution=16)
    assert tuple(x.shape) == (10, 3, 16, 16) and len(y) == 10
    with pytest.raises(UsageError, match="shapes2:N needs a whole number"):
        parse_spec("shapes2:5")
