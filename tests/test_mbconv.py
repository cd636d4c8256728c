"""MBConv single-path space specifics."""
from __future__ import annotations

import numpy as np
import pytest

from nas.core.errors import ArchError, UsageError
from search_spaces.catalog import get_space


def test_structure_and_size() -> None:
    s = get_space("mbconv")
    assert len(s.decisions) == 21
    # the first layer of each of the 6 stages cannot be skipped: 4 choices; the other 15 have 5
    assert sorted({len(d.choices) for d in s.decisions}) == [4, 5]
    assert s.size() == pytest.approx(4**6 * 5**15)
    assert len(s.all_layers()) == 47


def test_skip_not_allowed_on_first_layer_of_stage() -> None:
    s = get_space("mbconv")
    text = s.presets["single-path-nas"].replace("k5e6 k3e3 k3e3 k3e3", "skip k3e3 k3e3 k3e3", 1)
    with pytest.raises(ArchError, match="cannot be skipped"):
        s.parse(text)


def test_bad_token_lists_valid_tokens() -> None:
    s = get_space("mbconv")
    text = s.presets["single-path-nas"].replace("k3e3", "k7e3", 1)
    with pytest.raises(ArchError, match=r"'k7e3'.*valid: k3e3, k3e6, k5e3, k5e6"):
        s.parse(text)


def test_options_change_structure() -> None:
    s = get_space("mbconv", width_mult=0.5, resolution=128, kernels=[3, 5, 7])
    a = s.sample(np.random.default_rng(0))
    assert s.layers(a)[0].input_shape == (3, 128, 128)
    assert len(s.decisions[0].choices) == 6
    with pytest.raises(UsageError, match="valid options"):
        get_space("mbconv", depth=3)
    with pytest.raises(UsageError, match="width_mult"):
        get_space("mbconv", width_mult=0)


def test_single_path_nas_params_match_paper() -> None:
    # Single-Path NAS reports 4.3M parameters for its Pixel 1 net (Stamoulis et al. 2019, Table 1).
    s = get_space("mbconv")
    model = s.build(s.parse(s.presets["single-path-nas"]))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(4.3, rel=0.05)


def test_build_is_composition_of_layers(rng: np.random.Generator) -> None:
    s = get_space("mbconv", resolution=64)
    a = s.sample(rng)
    assert len(s.build(a)) == len(s.layers(a))
