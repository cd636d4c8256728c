"""ViT-ResNAS space specifics: structure, canonical form, block strings, layers, published sizes, ONNX."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from search_spaces.catalog import get_space
from search_spaces.ops import build_layer, layer_macs
from search_spaces.vit_resnas import DEIT_TINY, DEIT_TINY_OPTIONS

SMALL = {"resolution": 32, "patch": 4, "num_classes": 10}
#: a toy configuration whose nets are tiny (for ONNX and exhaustive checks)
TOY = {**SMALL, "widths": [[8, 16], [16, 24], [32]], "heads": [[1, 2], [2], [2, 4]], "head_dims": [4, 4, 8],
       "mlp": [[8, 16], [32], [32, 64]], "depths": [[1, 2], [1], [1, 2]]}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(space, arch) -> int:
    return sum(layer_macs(s) for s in space.layers(arch))


def test_structure_matches_paper_supernet() -> None:
    s = get_space("vit_resnas")
    # per stage: depth + width + 6 block slots x (heads, mlp)
    assert len(s.decisions) == 3 * (2 + 2 * 6)
    assert [d.choices for d in s.decisions[:4]] == [(3, 4, 5, 6), (160, 176, 192, 224, 256), (3, 4, 5, 6),
                                                    (384, 448, 512, 576, 640, 704, 768)]
    # slots 4..6 may be inactive (placeholder 0); slots 1..3 may not
    assert s.decisions[2 + 2 * 3].name == "s1.b4.heads" and s.decisions[2 + 2 * 3].choices[0] == 0
    assert 0 not in s.decisions[2 + 2 * 2].choices
    # exact count: per stage 5 widths x sum_{d=3..6} (4 heads x 7 mlp)^d
    assert s.size() == pytest.approx((5 * sum(28.0 ** d for d in range(3, 7))) ** 3)
    assert math.log10(s.size()) == pytest.approx(28.19, abs=0.01)
    # 5 embeddings + 3 x 5 x 4 x 7 blocks + 2 x 25 reductions + 5 heads
    assert len(s.all_layers()) == 5 + 420 + 50 + 5


def test_size_is_exact_and_sampling_canonical() -> None:
    s = get_space("vit_resnas", **TOY)
    # stage 1: 2 widths x (4 + 4^2) = 40; stage 2: 2 x 1 = 2; stage 3: 1 x (4 + 16) = 20
    assert s.size() == 40 * 2 * 20
    tiny = get_space("vit_resnas", **{**TOY, "widths": [[8, 16], [16], [32]], "heads": [[1, 2], [2], [2]],
                                      "mlp": [[8], [32], [32]]})
    assert tiny.size() == 2 * (2 + 4) * 1 * (1 + 1)
    rng = np.random.default_rng(0)
    seen = {tiny.sample(rng) for _ in range(3000)}
    assert len(seen) == tiny.size()   # every net reached, and no two archs for one net


def test_inactive_slots_must_be_zero() -> None:
    s = get_space("vit_resnas", **SMALL)
    a = s.parse(s.presets["supernet-min"])
    genes = list(a.genes)
    assert genes[2 + 2 * 3:2 + 2 * 6] == [0] * 6          # s1 slots 4..6 inactive
    genes[2 + 2 * 3] = 3
    with pytest.raises(ArchError, match="canonical"):
        s.validate(Arch("vit_resnas", tuple(genes)))
    genes = list(a.genes)
    genes[0] = 4                                          # depth 4 but slot 4 still empty
    with pytest.raises(ArchError, match="s1 block 4 is active"):
        s.validate(Arch("vit_resnas", tuple(genes)))
    genes = list(a.genes)
    genes[1] = 160.0
    with pytest.raises(ArchError, match="integer"):
        s.validate(Arch("vit_resnas", tuple(genes)))


def test_canonicalize_repairs_raw_genes(rng: np.random.Generator) -> None:
    s = get_space("vit_resnas", **SMALL)
    a = s.parse(s.presets["supernet-min"])
    genes = list(a.genes)
    genes[2 + 2 * 3] = 3                                  # junk in an inactive slot: switched off
    assert s.canonicalize(genes) == a
    genes = list(a.genes)
    genes[0] = 4                                          # a new active slot gets the smallest choices
    fixed = s.stages(s.canonicalize(genes))[0]
    assert fixed.depth == 4 and fixed.blocks[3] == (min(s.heads[0]), min(s.mlp[0]))
    for _ in range(50):                                   # any raw proposal becomes a valid arch
        raw = [d.choices[rng.integers(len(d.choices))] for d in s.decisions]
        s.validate(s.canonicalize(raw))
    b = s.sample(rng)
    assert s.canonicalize(list(b.genes)) == b
    with pytest.raises(ArchError, match="genes"):
        s.canonicalize([1, 2])


def test_block_string_round_trip_and_errors() -> None:
    s = get_space("vit_resnas")
    text = s.presets["vit-resnas-tiny"]
    a = s.parse(text)
    assert s.format(a) == text
    assert s.parse("  " + text.replace(" | ", "   |\t")) == a          # whitespace-tolerant, canonical output
    with pytest.raises(ArchError, match=r"s1 block 2: bad token 'h7m576'; valid: .*heads in 3, 4, 5, 6"):
        s.parse(text.replace("h3m576", "h7m576", 1))
    with pytest.raises(ArchError, match=r"'h3m700'.*mlp in 384, 448"):
        s.parse(text.replace("h3m704", "h3m700", 1))
    with pytest.raises(ArchError, match=r"s2 width: bad token 'w350'; valid: w320, w352, w384, w448, w512"):
        s.parse(text.replace("w352", "w350"))
    with pytest.raises(ArchError, match=r"s1 depth: bad token 'd05'; valid: d3, d4, d5, d6"):
        s.parse(text.replace("d5", "d05", 1))
    with pytest.raises(ArchError, match="depth token d6 but 5 block tokens"):
        s.parse(text.replace("d5", "d6", 1))
    with pytest.raises(ArchError, match=r"bad token 's3:'; valid: 's2:'"):
        s.parse(text.replace("s2:", "s3:"))
    with pytest.raises(ArchError, match="needs 3 stages"):
        s.parse(text.split(" || ", 1)[1])


def test_mutate_changes_one_decision_and_stays_canonical(rng: np.random.Generator) -> None:
    s = get_space("vit_resnas", **SMALL)
    a = s.sample(rng)
    for _ in range(200):
        b = s.mutate(a, rng)
        diff = [st for st in zip(s.stages(a), s.stages(b)) if st[0] != st[1]]
        assert len(diff) == 1
        old, new = diff[0]
        if old.depth != new.depth:                         # kept blocks are unchanged
            keep = min(old.depth, new.depth)
            assert old.blocks[:keep] == new.blocks[:keep] and old.width == new.width
        else:
            changed = (old.width != new.width) + sum(x != y for x, y in zip(old.blocks, new.blocks))
            assert changed == 1
        a = s.validate(b)
    fixed = get_space("vit_resnas", **DEIT_TINY_OPTIONS)
    with pytest.raises(ArchError, match="nothing to mutate"):
        fixed.mutate(fixed.parse(DEIT_TINY), rng)


def test_layers_chain_with_real_shapes(rng: np.random.Generator) -> None:
    s = get_space("vit_resnas", **SMALL)
    a = s.parse(s.presets["vit-resnas-tiny"])
    specs = s.layers(a)
    assert [x.op for x in specs] == (["vit_conv_embed"] + ["vit_block"] * 5 + ["vit_reduce"] + ["vit_block"] * 6
                                     + ["vit_reduce"] + ["vit_block"] * 5 + ["vit_head"])
    for prev, nxt in zip(specs, specs[1:]):
        assert prev.output_shape == nxt.input_shape
    # 32 / patch 4 = 8x8 grid + class token, then 4x4 + 1, then 2x2 + 1
    assert specs[1].input_shape == (65, 176) and specs[7].input_shape == (17, 352)
    assert specs[6].key == "vit_reduce(cin=176,cout=352,grid=8)@65x176"
    assert specs[-1].output_shape == (10,)
    assert specs[1].kwargs == {"dim": 176, "heads": 3, "head_dim": 32, "mlp": 704}
    model = s.build(a)
    assert len(model) == len(specs)
    x = torch.randn(1, *s.input_shape)
    with torch.no_grad():
        for spec, layer in zip(specs, model):            # each layer builds alone with the spec's shapes
            alone = build_layer(spec).eval()
            x = layer.eval()(x)
            assert tuple(x.shape[1:]) == spec.output_shape
            assert tuple(alone(torch.randn(1, *spec.input_shape)).shape[1:]) == spec.output_shape


def test_macs_match_torch_flop_counter(rng: np.random.Generator) -> None:
    from torch.utils.flop_counter import FlopCounterMode
    for opts in (SMALL, {**TOY, "stem": "linear"}):
        s = get_space("vit_resnas", **opts)
        a = s.parse(s.presets["supernet-min"]) if opts is SMALL else s.sample(rng)
        model = s.build(a).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, *s.input_shape))
        assert counter.get_total_flops() == 2 * macs(s, a)   # a FLOP counter counts a MAC as 2 FLOPs


def test_vit_resnas_tiny_matches_paper() -> None:
    # ViT-ResNAS-Tiny (Liao et al. 2021, Table 3): 41M params, 1.8G MACs, both rounded, hence the
    # tolerances of half a unit of the last digit. The inference net excludes the training-only patch
    # head of the official code (704 x 1000 + 1000 params), which would give 41.5M.
    s = get_space("vit_resnas")
    a = s.parse(s.presets["vit-resnas-tiny"])
    model = s.build(a).eval()
    assert n_params(model) / 1e6 == pytest.approx(41, abs=0.5)
    assert macs(s, a) / 1e9 == pytest.approx(1.8, abs=0.05)
    with torch.no_grad():
        y = model(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()


def test_deit_tiny_is_a_one_stage_instance() -> None:
    # DeiT-Ti (Touvron et al. 2021): 5.7M params, 1.3G FLOPs (= MACs). Our net has exactly the
    # structure of the reference implementation, whose count is 5,717,416.
    s = get_space("vit_resnas", **DEIT_TINY_OPTIONS)
    a = s.parse(DEIT_TINY)
    assert s.size() == 1
    assert n_params(s.build(a)) == 5_717_416
    assert macs(s, a) / 1e9 == pytest.approx(1.3, abs=0.05)
    assert [x.op for x in s.layers(a)] == ["vit_patch_embed"] + ["vit_block"] * 12 + ["vit_head"]
    assert s.layers(a)[1].input_shape == (197, 192)


def test_reduction_shortcut_is_pool_plus_zero_pad() -> None:
    from search_spaces.vit_ops import reduce_spec
    spec = reduce_spec(grid=4, cin=8, cout=12)
    layer = build_layer(spec).eval()
    with torch.no_grad():
        for p in (layer.conv.weight, layer.conv.bias, layer.cls_proj.weight, layer.cls_proj.bias, layer.pos_embed):
            p.zero_()
        x = torch.randn(2, 17, 8)
        y = layer(x)
    grid = x[:, 1:].transpose(1, 2).reshape(2, 8, 4, 4)
    pooled = torch.nn.functional.avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    assert y.shape == (2, 5, 12)
    torch.testing.assert_close(y[:, 1:, :8], pooled)
    torch.testing.assert_close(y[:, :1, :8], x[:, :1])
    assert (y[..., 8:] == 0).all()


@pytest.mark.parametrize("stem", ["conv", "linear"])
def test_onnx_export_matches_torch(stem: str, tmp_path, rng: np.random.Generator) -> None:
    from latency.onnx_io import export_onnx, run, session
    s = get_space("vit_resnas", **{**TOY, "stem": stem})
    a = s.sample(rng)
    model = s.build(a).eval()
    x = torch.randn(1, *s.input_shape)
    sess = session(export_onnx(model, x, tmp_path / "net.onnx"))
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(run(sess, x.numpy()), ref, atol=1e-4, rtol=0)
    # each op alone too (what profiling times)
    for spec in {x.op: x for x in s.layers(a)}.values():
        layer = build_layer(spec).eval()
        xi = torch.randn(1, *spec.input_shape)
        out = run(session(export_onnx(layer, xi, tmp_path / f"{spec.op}.onnx")), xi.numpy())
        with torch.no_grad():
            np.testing.assert_allclose(out, layer(xi).numpy(), atol=1e-4, rtol=0)


def test_options_round_trip_and_validation() -> None:
    s = get_space("vit_resnas", **TOY)
    again = get_space("vit_resnas", **s.options())
    assert again.decisions == s.decisions and again.describe() == s.describe()
    assert s.build(s.sample(np.random.default_rng(0)), num_classes=3)(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    bad = [({"stem": "mlp"}, "stem 'mlp' unknown; valid: conv, linear"),
           ({"widths": [[64], [32], [128]]}, r"widths\[1\] = \[32\] must all be >= max\(widths\[0\]\) = 64"),
           ({"resolution": 36}, "resolution 36 / patch 14"),
           ({"resolution": 32, "patch": 4, "depths": [[3]]}, "depths has 1 stages but widths has 3"),
           ({"heads": [[0, 2], [2], [2]]}, "must be a non-empty list of positive integers"),
           ({"patch": 15}, "even for the conv stem")]
    for opts, msg in bad:
        with pytest.raises(UsageError, match=msg):
            get_space("vit_resnas", **opts)
