"""The contract every registered search space must pass (parametrized over the registry).

Spaces are instantiated with their `small` test options (tiny inputs) so the suite stays fast.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.core.arch import Arch
from nas.core.errors import ArchError
from search_spaces.catalog import SPACES, get_space

#: per space, options that make nets small enough for fast tests
SMALL: dict[str, dict] = {
    "mbconv": {"resolution": 32, "width_mult": 0.35, "num_classes": 10},
    "nasnet": {"resolution": 32, "channels": 8, "cells": 1, "num_classes": 10},
    "hytra": {"resolution": 32, "num_classes": 10, "width": 16},
    "vit_resnas": {"resolution": 32, "num_classes": 10, "patch": 4},
    "nb201": {"channels": 8, "cells": 1},
    "ofa_mbv3": {"resolution": 32, "num_classes": 10},
}
NAMES = SPACES.names()


def small(name: str):
    opts = SMALL.get(name, {})
    try:
        return get_space(name, **opts)
    except Exception:
        return get_space(name)


@pytest.mark.parametrize("name", NAMES)
def test_sample_valid_and_deterministic(name: str) -> None:
    space = small(name)
    a = [space.sample(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    archs = [space.sample(np.random.default_rng(s)) for s in range(20)]
    assert len({x.key for x in archs}) > 1
    for x in archs:
        assert space.validate(x) is x


@pytest.mark.parametrize("name", NAMES)
def test_round_trips(name: str, rng: np.random.Generator) -> None:
    space = small(name)
    for _ in range(10):
        arch = space.sample(rng)
        text = space.format(arch)
        assert space.parse(text) == arch
        assert space.format(space.parse(text)) == text
        assert Arch.from_json(arch.to_json()) == arch
        assert space.decode(space.encode(arch)) == arch


@pytest.mark.parametrize("name", NAMES)
def test_mutation_stays_valid(name: str, rng: np.random.Generator) -> None:
    space = small(name)
    arch = space.sample(rng)
    for _ in range(20):
        child = space.mutate(arch, rng)
        assert child != arch
        space.validate(child)
        arch = child


@pytest.mark.parametrize("name", NAMES)
def test_bad_block_strings_raise_with_valid_tokens(name: str, rng: np.random.Generator) -> None:
    space = small(name)
    text = space.format(space.sample(rng))
    with pytest.raises(ArchError):
        space.parse(text + " | bogus")
    first = text.split()[0]
    bad = text.replace(first, "zz9_bogus", 1)
    with pytest.raises(ArchError, match="zz9_bogus") as info:
        space.parse(bad)
    assert "valid" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_build_forward_shape(name: str, rng: np.random.Generator) -> None:
    space = small(name)
    for _ in range(3):
        arch = space.sample(rng)
        model = space.build(arch).eval()
        with torch.no_grad():
            y = model(torch.randn(2, *space.input_shape))
        assert y.shape == (2, space.num_classes)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_layers_compose_and_cover_all_layers(name: str, rng: np.random.Generator) -> None:
    space = small(name)
    keys = {s.key for s in space.all_layers()}
    for _ in range(10):
        specs = space.layers(space.sample(rng))
        assert specs, "layers() must not be empty"
        missing = [s.key for s in specs if s.key not in keys]
        assert not missing, f"all_layers() misses {missing[:3]}"


@pytest.mark.parametrize("name", NAMES)
def test_presets_parse(name: str) -> None:
    space = get_space(name)
    for preset, text in space.presets.items():
        arch = space.parse(text)
        assert space.format(arch) == " ".join(text.split()) or space.parse(space.format(arch)) == arch, preset


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_torch(name: str, rng: np.random.Generator, tmp_path) -> None:
    from nas.deploy.export import export_onnx

    space = small(name)
    arch = space.sample(rng)
    _, diff = export_onnx(space, arch, tmp_path / "net.onnx", seed=1, batch=2)
    assert diff < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_profiled_table_predicts(name: str, rng: np.random.Generator) -> None:
    """Profile the layers of two sampled archs into a fresh table; the LUT model then predicts them."""
    from latency.model import LUTModel
    from latency.profile import ProfileSettings, device_metadata, profile_layers
    from latency.table import LatencyTable

    space = small(name)
    archs = [space.sample(rng) for _ in range(2)]
    specs = list({s.key: s for a in archs for s in space.layers(a)}.values())
    settings = ProfileSettings(warmup=1, repeats=2)
    table = profile_layers(specs, settings, LatencyTable(space.name, space.options(), device_metadata(settings)),
                           progress=False)
    assert set(table.entries) == {s.key for s in specs}
    if space.separable_layers() is None:  # a separable space needs every layer for its gather matrix
        model = LUTModel(space, table)
        assert all(model.predict(a) > 0 for a in archs)
