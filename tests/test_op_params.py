"""Spec-based parameter counts (search_spaces.op_params) equal the built torch modules' counts."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.core.errors import UnknownNameError
from nas.core.layer import LayerSpec
from search_spaces.catalog import SPACES, get_space
from search_spaces.op_params import OP_PARAMS, arch_macs, arch_params, arch_size, layer_params
from search_spaces.ops import OPS, build_layer, layer_macs

NAMES = SPACES.names()
#: nasnet with every NASNet op (the default variant) and the DARTS variant's dilated convs
VARIANTS: list[tuple[str, dict]] = [(n, {}) for n in NAMES] + [("nasnet", {"variant": "darts"}),
                                                               ("hytra", {"se": True})]


def _space(name: str, opts: dict):  # type: ignore[no-untyped-def]
    try:
        return get_space(name, **opts)
    except Exception:  # an option the space lacks: the plain space
        return get_space(name)


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_op_has_a_parameter_count() -> None:
    """A formula for every op but the benchmark space's few layers, which are counted once on the
    built layer (cached); both are checked against torch below."""
    assert set(OPS.names()) - set(OP_PARAMS) <= {"nb201_edge", "nb201_head", "nb201_resblock"}


@pytest.mark.parametrize("name,opts", VARIANTS)
def test_every_layer_of_every_space_counts_like_torch(name: str, opts: dict) -> None:
    space = _space(name, opts)
    specs = {s.key: s for s in [*space.all_layers(), *space.all_join_layers()]}   # join layers: int8 tables
    assert specs
    with torch.device("meta"):   # shapes only: nothing is allocated
        for spec in specs.values():
            assert layer_params(spec) == _numel(build_layer(spec)), spec.key


@pytest.mark.parametrize("name", NAMES)
def test_arch_params_equal_the_built_net(name: str) -> None:
    space = get_space(name)
    rng = np.random.default_rng(3)
    with torch.device("meta"):
        for _ in range(3):
            arch = space.sample(rng)
            assert arch_params(space, arch) == _numel(space.build(arch))
            assert arch_macs(space, arch) == sum(layer_macs(s) for s in space.layers(arch))
            assert arch_size(space, arch) == (arch_params(space, arch), arch_macs(space, arch))


def test_published_size_of_single_path_nas() -> None:
    # Stamoulis et al. 2019 report 4.3 M parameters for the Pixel 1 net (1000 classes)
    space = get_space("mbconv")
    params = arch_params(space, space.parse_any("single-path-nas"))
    assert params == pytest.approx(4.3e6, rel=0.03)


def test_unknown_op_names_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="valid ops: .*mbconv"):
        layer_params(LayerSpec.make("nope", {}, (1,), (1,)))


def test_ops_no_space_uses_by_default_count_like_torch() -> None:
    from search_spaces.ops import conv_spec, mbconv_spec
    from search_spaces.ops_extra import dwsep_spec
    from search_spaces.vit_ops import embed_spec
    specs = [dwsep_spec(16, 32, 3, 2, (16, 16)), embed_spec("linear", 64, 4, 32), embed_spec("conv", 64, 4, 32),
             mbconv_spec(16, 24, 5, 4, 2, (16, 16), se=0.25, act="swish"), mbconv_spec(16, 16, 3, 1, 1, (8, 8)),
             conv_spec(3, 8, 3, 1, (8, 8))]
    with torch.device("meta"):
        for spec in specs:
            assert layer_params(spec) == _numel(build_layer(spec)), spec.key


# ---- the zero-cost evaluator builds nets only for proxies that need one ---------------------------
@pytest.mark.parametrize("proxy", ["flops", "params"])
def test_size_proxies_build_no_torch_module(proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from nas.evaluators.catalog import make_evaluator
    space = get_space("mbconv")
    arch = space.parse_any("single-path-nas")
    with torch.device("meta"):
        expected_params = _numel(space.build(arch))
    calls: list[str] = []
    monkeypatch.setattr(type(space), "build", lambda *a, **k: calls.append("build"))
    monkeypatch.setattr("search_spaces.ops.build_layer", lambda *a, **k: calls.append("layer"))
    ev = make_evaluator("zero-cost", space, seed=0, proxy=proxy)
    out = ev(arch)
    assert calls == [] and not ev.needs_model
    assert out["params_m"] * 1e6 == pytest.approx(expected_params, abs=0.5)
    assert out["macs_m"] * 1e6 == pytest.approx(sum(layer_macs(s) for s in space.layers(arch)), abs=0.5)
    assert out["score"] == (out["macs_m"] * 1e6 if proxy == "flops" else out["params_m"] * 1e6)


def test_model_proxies_still_build_and_report_full_net_size() -> None:
    from nas.evaluators.catalog import make_evaluator
    space = get_space("mbconv", resolution=64, width_mult=0.35, num_classes=10)
    arch = space.sample(np.random.default_rng(0))
    ev = make_evaluator("zero-cost", space, seed=0, proxy="synflow", batch=4)
    out = ev(arch)
    assert ev.needs_model and np.isfinite(out["synflow"])
    assert out["params_m"] * 1e6 == pytest.approx(_numel(space.build(arch)), abs=0.5)
