"""Published networks with published Pixel 1 latencies, written as LayerSpec lists.

These calibrate (CALIBRATION) and check (HELD_OUT, FAMILIES, `cell_held_out`) the Pixel 1 device
model of `latency/devices/pixel1.py` (through `latency.devices.pixel1_calibration`). Every latency is the single-thread TFLite float latency on the big core of a Google
Pixel 1 as the cited source reports it; where the source is a repository README rather than the
paper, that is said. Architectures follow the authors' released definitions (cited per builder);
`published_params_m` / `published_macs_m` let tests check that the specs are the right nets.

Sources (short names used below):
  [MBV2]    Sandler et al., "MobileNetV2", CVPR 2018, Table 4 (Pixel 1, TF-Lite, one large core).
  [MNAS]    Tan et al., "MnasNet", CVPR 2019, Table 1 (big CPU core of Pixel 1, batch 1); it
            repeats the [MBV2] numbers for MobileNetV1/V2. Table 4: 0.35x models.
  [MNAS-RM] tensorflow/tpu models/official/mnasnet/README.md: MnasNet-A1 depth multiplier x
            input size grid, "Pixel1 latency (ms)".
  [SLIM]    tensorflow/models research/slim/nets/mobilenet/README.md: MobileNetV2 checkpoints,
            "Mobile CPU (ms) Pixel 1".
  [PXL]     Cai et al., "ProxylessNAS", ICLR 2019, Table 2, and mit-han-lab/proxylessnas
            README.md (mobile 78 ms; mobile_14 147 ms).
  [SPNAS]   Stamoulis et al., "Single-Path NAS", ECML-PKDD 2019: 79.48 ms (Table 1 per the brief;
            the abstract we could read says "79ms", the two decimals were not verified).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from nas.core.layer import LayerSpec
from search_spaces.cell_ops import combine_spec, op_spec, pre_spec
from search_spaces.ops import conv_out, conv_spec, head_spec, make_divisible, mbconv_spec
from search_spaces.ops_extra import dwsep_spec

#: one MBConv stage: (kernel, expansion, out channels, repeats, stride of the first, se ratio)
Stage = tuple[int, int, int, int, int, float]


@dataclass(frozen=True)
class ReferenceNet:
    name: str
    published_ms: float
    source: str
    build: Callable[[], list[LayerSpec]]
    published_params_m: float | None = None
    published_macs_m: float | None = None


def _mbconv_net(stages: Sequence[Stage], res: int = 224, stem: int = 32, first: int = 16, last: int = 1280,
                width: float = 1.0, last_scales: bool = True) -> list[LayerSpec]:
    """Stem conv3x3/2 -> MBConv e1 k3 (`first`) -> stages -> head (1x1 conv `last`, pool, FC 1000).

    Channels are scaled by `width` with the MobileNet rounding (multiples of 8, never below 90%);
    `last` is scaled only when `last_scales` and width > 1 (TF-slim MobileNetV2 convention).
    """
    c0, c1 = make_divisible(stem * width), make_divisible(first * width)
    r = conv_out(res, 3, 2)
    specs = [conv_spec(3, c0, 3, 2, (res, res)), mbconv_spec(c0, c1, 3, 1, 1, (r, r))]
    cin = c1
    for k, e, c, n, s, se in stages:
        cout = make_divisible(c * width)
        for i in range(n):
            specs.append(mbconv_spec(cin, cout, k, e, s if i == 0 else 1, (r, r), se=se))
            r = conv_out(r, k, s if i == 0 else 1)
            cin = cout
    cl = make_divisible(last * width) if (last_scales and width > 1.0) else last
    specs.append(head_spec(cin, cl, 1000, (r, r)))
    return specs


def _layers(cfg: Sequence[tuple[int, int, int, int]], res: int = 224, stem: int = 32, first: int = 16,
            last: int = 1280) -> list[LayerSpec]:
    """Per-layer MBConv list (k, e, cout, stride) after the stem + e1 block; for searched nets."""
    return _mbconv_net([(k, e, c, 1, s, 0.0) for k, e, c, s in cfg], res, stem, first, last)


# ---- MobileNetV2 (Sandler et al. 2018, Table 2: t, c, n, s) ------------------------------------
_MBV2: list[Stage] = [(3, 6, 24, 2, 2, 0.0), (3, 6, 32, 3, 2, 0.0), (3, 6, 64, 4, 2, 0.0),
                      (3, 6, 96, 3, 1, 0.0), (3, 6, 160, 3, 2, 0.0), (3, 6, 320, 1, 1, 0.0)]


def mobilenet_v2(width: float = 1.0, res: int = 224) -> list[LayerSpec]:
    # TF-slim: the 1280 head conv is kept for width < 1 and scaled for width > 1.
    return _mbconv_net(_MBV2, res, width=width)


# ---- MnasNet-A1 (Tan et al. 2019, Fig. 7; tensorflow/tpu mnasnet_models.py mnasnet_a1) ------------
_MNAS_A1: list[Stage] = [(3, 6, 24, 2, 2, 0.0), (5, 3, 40, 3, 2, 0.25), (3, 6, 80, 4, 2, 0.0),
                         (3, 6, 112, 2, 1, 0.25), (5, 6, 160, 3, 2, 0.25), (3, 6, 320, 1, 1, 0.0)]


def mnasnet_a1(width: float = 1.0, res: int = 224) -> list[LayerSpec]:
    # mnasnet_model.py: stem and blocks scaled by the depth multiplier, the 1280 head conv is not.
    return _mbconv_net(_MNAS_A1, res, width=width, last_scales=False)


# ---- ProxylessNAS-mobile (Cai et al. 2019, Fig. 4; released proxyless_mobile config) --------------
# 1 + 2 + 4 + 4 + 4 + 4 + 1 MBConv layers (the last two of the first searched stage are zero
# layers); note the first searched stage is 32 wide (not 24 as in the mbconv space).
_PXL_MOBILE = [(5, 3, 32, 2), (3, 3, 32, 1),
               (7, 3, 40, 2), (3, 3, 40, 1), (5, 3, 40, 1), (5, 3, 40, 1),
               (7, 6, 80, 2), (5, 3, 80, 1), (5, 3, 80, 1), (5, 3, 80, 1),
               (5, 6, 96, 1), (5, 3, 96, 1), (5, 3, 96, 1), (5, 3, 96, 1),
               (7, 6, 192, 2), (7, 6, 192, 1), (7, 3, 192, 1), (7, 3, 192, 1),
               (7, 6, 320, 1)]
# proxyless_mobile_14: same layer types, widths 48 / 24 / 40, 56, 112, 136, 256, 448 / 1792.
_PXL14_W = {32: 40, 40: 56, 80: 112, 96: 136, 192: 256, 320: 448}


def proxyless_mobile() -> list[LayerSpec]:
    return _layers(_PXL_MOBILE)


def proxyless_mobile_14() -> list[LayerSpec]:
    return _layers([(k, e, _PXL14_W[c], s) for k, e, c, s in _PXL_MOBILE], stem=48, first=24, last=1792)


# ---- Single-Path NAS (Stamoulis et al. 2019, Fig. 5; released spnasnet definition) ----------------
_SPNAS = [(3, 3, 24, 2), (3, 3, 24, 1), (3, 3, 24, 1),
          (5, 6, 40, 2), (3, 3, 40, 1), (3, 3, 40, 1), (3, 3, 40, 1),
          (5, 6, 80, 2), (3, 3, 80, 1), (3, 3, 80, 1), (3, 3, 80, 1),
          (5, 6, 96, 1), (5, 3, 96, 1), (5, 3, 96, 1), (5, 3, 96, 1),
          (5, 6, 192, 2), (5, 6, 192, 1), (5, 6, 192, 1), (5, 6, 192, 1),
          (3, 6, 320, 1)]

#: The Single-Path NAS net in the mbconv space's block-string format (21 searchable positions).
SINGLE_PATH_NAS_BLOCKS = ("k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | k5e6 k3e3 k3e3 k3e3 | "
                          "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e6 k5e6 | k3e6")


def single_path_nas() -> list[LayerSpec]:
    return _layers(_SPNAS)


# ---- MobileNetV1 (Howard et al. 2017, Table 1) ------------------------------------------------
_MBV1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def mobilenet_v1(res: int = 224) -> list[LayerSpec]:
    r = conv_out(res, 3, 2)
    specs = [conv_spec(3, 32, 3, 2, (res, res))]
    cin = 32
    for cout, s in _MBV1:
        specs.append(dwsep_spec(cin, cout, 3, s, (r, r)))
        r, cin = conv_out(r, 3, s), cout
    return specs + [head_spec(cin, 0, 1000, (r, r))]


# ---- MobileNetV3 (Howard et al. 2019, Tables 1-2; TF-slim mobilenet_v3.py V3_LARGE / V3_SMALL) ----------
#: bneck rows: (kernel, expansion width, out channels, squeeze-excite, hard-swish, stride)
_V3_LARGE = [(3, 16, 16, 0, 0, 1), (3, 64, 24, 0, 0, 2), (3, 72, 24, 0, 0, 1), (5, 72, 40, 1, 0, 2),
             (5, 120, 40, 1, 0, 1), (5, 120, 40, 1, 0, 1), (3, 240, 80, 0, 1, 2), (3, 200, 80, 0, 1, 1),
             (3, 184, 80, 0, 1, 1), (3, 184, 80, 0, 1, 1), (3, 480, 112, 1, 1, 1), (3, 672, 112, 1, 1, 1),
             (5, 672, 160, 1, 1, 2), (5, 960, 160, 1, 1, 1), (5, 960, 160, 1, 1, 1)]
_V3_SMALL = [(3, 16, 16, 1, 0, 2), (3, 72, 24, 0, 0, 2), (3, 88, 24, 0, 0, 1), (5, 96, 40, 1, 1, 2),
             (5, 240, 40, 1, 1, 1), (5, 240, 40, 1, 1, 1), (5, 120, 48, 1, 1, 1), (5, 144, 48, 1, 1, 1),
             (5, 288, 96, 1, 1, 2), (5, 576, 96, 1, 1, 1), (5, 576, 96, 1, 1, 1)]


def mobilenet_v3(size: str = "large", width: float = 1.0, minimalistic: bool = False, res: int = 224) -> list[LayerSpec]:
    """MobileNetV3-Large / -Small as released in TF-slim (1001 classes). Widths (expansions too) scale
    by `width` to multiples of 8 (expansions are factors of the scaled input width); the last 1x1 conv (1280 / 1024) does not. SE squeezes to
    make_divisible(expansion / 4) with a hard-sigmoid gate. Minimalistic: no SE, ReLU only, 3x3 kernels."""
    rows = {"large": _V3_LARGE, "small": _V3_SMALL}.get(size)
    if rows is None:
        raise ValueError(f"MobileNetV3 size {size!r}; valid: large, small")
    hs = "relu" if minimalistic else "hswish"
    c0 = make_divisible(16 * width)
    r = conv_out(res, 3, 2)
    specs = [conv_spec(3, c0, 3, 2, (res, res), act=hs)]
    cin, c_prev = c0, 16
    for k, exp, c, se, h_swish, s in rows:   # slim expands by a factor of the input width
        mid, cout = make_divisible(cin * exp / c_prev), make_divisible(c * width)
        c_prev = c
        k, se = (3, 0) if minimalistic else (k, se)
        ro = conv_out(r, k, s)
        params = {"cin": cin, "mid": mid, "cout": cout, "k": k, "s": s,
                  "se_ch": make_divisible(mid / 4) if se else 0, "act": "hswish" if h_swish and not minimalistic else "relu"}
        specs.append(LayerSpec.make("ir_block", params, (cin, r, r), (cout, ro, ro)))
        cin, r = cout, ro
    c1, c2 = make_divisible((960 if size == "large" else 576) * width), 1280 if size == "large" else 1024
    specs.append(LayerSpec.make("v3_head", {"cin": cin, "c1": c1, "c2": c2, "classes": 1001, "act": hs},
                                (cin, r, r), (1001,)))
    return specs


#: builders the published measurements (latency/devices/pixel1_data.json) name, with their arguments
NETS: dict[str, Callable[..., list[LayerSpec]]] = {
    "mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2, "mnasnet_a1": mnasnet_a1,
    "proxyless_mobile": proxyless_mobile, "proxyless_mobile_14": proxyless_mobile_14,
    "single_path_nas": single_path_nas, "mobilenet_v3": mobilenet_v3}


def build_net(name: str, **args: object) -> list[LayerSpec]:
    fn = NETS.get(name)
    if fn is None:
        raise ValueError(f"unknown reference net {name!r}; valid: {', '.join(sorted(NETS))}")
    return fn(**args)


# ---- held-out check: NASNet-A mobile ----------------------------------------------------------------
#: NASNet-A cells (Zoph et al. 2018, Fig. 4; TF-slim nasnet_utils.py NasNetANormalCell /
#: NasNetAReductionCell) as (op, input) pairs, two per block, in this repo's indexing: 0 = h[i-2],
#: 1 = h[i-1], 2 + k = block k (TF-slim's hidden-state indices 0 and 1 are the other way round).
NASNET_A_NORMAL = (("sep5x5", 1), ("sep3x3", 0), ("sep5x5", 0), ("sep3x3", 0), ("avg3x3", 1), ("id", 0),
                   ("avg3x3", 0), ("avg3x3", 0), ("sep3x3", 1), ("id", 1))
NASNET_A_REDUCE = (("sep5x5", 1), ("sep7x7", 0), ("max3x3", 1), ("sep7x7", 0), ("avg3x3", 1), ("sep5x5", 0),
                   ("id", 3), ("avg3x3", 2), ("sep3x3", 2), ("max3x3", 1))


def _sep_from(cin: int, c: int, k: int, hw: int) -> list[LayerSpec]:
    """A stride-2 separable op whose input has cin != c channels (the first stem cell reads the raw
    stem conv): (dw k/2 on cin, pw cin->c), (dw k, pw c->c), as plain convs."""
    def conv(a: int, b: int, kk: int, s: int, g: int, r: int) -> LayerSpec:
        ro = (r - 1) // s + 1
        return LayerSpec.make("conv_bn_act", {"cin": a, "cout": b, "k": kk, "s": s, "groups": g, "act": "none"},
                              (a, r, r), (b, ro, ro))
    r = (hw - 1) // 2 + 1
    return [conv(cin, cin, k, 2, cin, hw), conv(cin, c, 1, 1, 1, r), conv(c, c, k, 1, c, r), conv(c, c, 1, 1, 1, r)]


def nasnet_a_mobile(res: int = 224, filters: int = 44, classes: int = 1001) -> list[LayerSpec]:
    """NASNet-A (4 @ 1056) mobile, TF-slim `build_nasnet_mobile` (the released checkpoint the MnasNet
    and MobileNetV2 papers timed): conv 3x3/2 VALID (32) -> 2 reduction 'stem' cells (filters/4,
    filters/2) -> 3 x 4 normal cells with reduction cells before the 2nd and 3rd group -> ReLU, pool,
    FC. Normal cells concat h[i-2] and their 5 blocks (6C), reduction cells blocks 1-4 (4C). An
    input is brought to C by ReLU-1x1 conv-BN when its width differs, by a factorized reduce when its
    resolution does (`_reduce_prev_layer`); the first stem cell uses the raw stem output as h[i-2]."""
    r0 = (res - 3) // 2 + 1                            # VALID 3x3/2: 111 at 224
    # the 'same' conv_bn_act on a (2*r0)-pixel input has r0 outputs and the same MACs as VALID on res
    specs = [LayerSpec.make("conv_bn_act", {"cin": 3, "cout": 32, "k": 3, "s": 2, "act": "none"},
                            (3, 2 * r0, 2 * r0), (32, r0, r0))]
    outs: list[tuple[int, int]] = [(32, r0)]           # (channels, size) of each cell output
    plan = [(filters // 4, True), (filters // 2, True)]
    for group in range(3):
        plan += ([(filters * 2 ** group, True)] if group else []) + [(filters * 2 ** group, False)] * 4
    for i, (c, reduce) in enumerate(plan):
        (cp, hp), (cpp, hpp) = outs[-1], outs[-2] if len(outs) > 1 else outs[-1]
        raw_pp = i == 0                                # first stem cell: h[i-2] is the stem conv, unchanged
        if not raw_pp and hpp != hp:
            specs.append(pre_spec(cpp, c, (hpp, hpp), 2))
        elif not raw_pp and cpp != c:
            specs.append(pre_spec(cpp, c, (hp, hp), 1))
        specs.append(pre_spec(cp, c, (hp, hp), 1))
        ho = (hp - 1) // 2 + 1 if reduce else hp
        for tok, x in (NASNET_A_REDUCE if reduce else NASNET_A_NORMAL):
            s = 2 if reduce and x < 2 else 1
            if raw_pp and x == 0:
                specs += _sep_from(cpp, c, int(tok[3]), hp)
            elif tok != "id" or s != 1:
                specs.append(op_spec(tok, c, (hp, hp) if x < 2 else (ho, ho), s))
        concat = 4 if reduce else 6
        specs.append(combine_spec(c, 5, concat, (ho, ho)))
        outs.append((concat * c, ho))
    return specs + [head_spec(outs[-1][0], 0, classes, (outs[-1][1], outs[-1][1]))]


def cell_held_out() -> tuple["ReferenceNet", ...]:
    return (ReferenceNet("NASNet-A mobile", 183.0, "[MBV2] Table 4 / [MNAS] Table 1", nasnet_a_mobile, 5.3, 564),)
