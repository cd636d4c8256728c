"""Google Pixel 1 latency model: a calibrated per-op roofline of one big Kryo core (TFLite float32).

We cannot time layers on a Pixel 1, so this module predicts them. Each LayerSpec is decomposed
into primitives (dense conv, 1x1 pointwise conv, depthwise conv, global pool, fully connected,
elementwise) with their multiply-accumulates and float32 bytes moved. One primitive costs

    t = MACs / (PEAK * eff[kind]) + bytes / BW + OVERHEAD

with PEAK the nominal peak of one Kryo core (2.15 GHz x one 4-lane fp32 NEON FMA per cycle =
8.6 GMAC/s), eff[kind] the fraction of it TFLite reaches for that kind (pointwise/dense GEMM or
depthwise), BW the effective memory bandwidth of one core and OVERHEAD a fixed per-op dispatch
cost. Compute and traffic are added, not max-ed: on the published per-op profile of
ProxylessNAS-mobile the sum explains thin layers (16-24 channels at 112x112, weight-heavy 7x7
layers) much better than a max-roofline (PIXEL1.md). The three free constants (eff_pw, eff_dw,
BW) are fitted once, by least squares on log(predicted / published) of the calibration nets in
`search_spaces.reference_nets.CALIBRATION` (``python -m nas.pixel1_calibration fit --write``), and stored in
FITTED below: nothing is fitted at run time. See PIXEL1.md for the errors and the limits.

The decomposition into primitives is `primitives.py` (extension point: `register_op("my_op", fn)`;
ops without an entry raise `LatencyError` naming the op and the known ones). The ops of the nasnet,
hytra and vit_resnas spaces are registered from `pixel1_ops.py` (imported here); their attention /
LayerNorm terms are extrapolations from the CNN calibration (PIXEL1.md). The fit and its checks on
published data are `nas/pixel1_calibration.py` (they need the published nets of search_spaces/).
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import latency.devices.pixel1_ops  # noqa: F401  (registers the cell / hybrid / ViT op decompositions)
from latency.devices.primitives import KINDS, Primitive, decompose
from nas.core.errors import LatencyError
from nas.core.layer import LayerSpec

if TYPE_CHECKING:
    from latency.table import LatencyTable
    from nas.core.space import SearchSpace

DEVICE = "Google Pixel 1 (Snapdragon 821, 1 big core)"


# ---- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Constants:
    """Model constants; the defaults of the fitted ones are only the fit's starting point."""

    peak_gmacs: float = 8.6       # 2.15 GHz x 4 fp32 lanes x 1 FMA/cycle (nominal, fixed)
    eff_pw: float = 0.5           # 1x1 convs (GEMM); dense kxk convs (im2col + GEMM) and FC use it too
    eff_dw: float = 0.3           # depthwise convs
    bandwidth_gbs: float = 4.0    # effective single-core memory bandwidth (GB/s), not the DRAM peak
    overhead_us: float = 2.0      # per-op dispatch cost (fixed: a RESHAPE node's time in the per-op profile)


#: the names `fit` adjusts; the others are fixed from hardware facts / public per-op profiles
FIT_NAMES = ("eff_pw", "eff_dw", "bandwidth_gbs")

# BEGIN FITTED (written by `python -m nas.pixel1_calibration fit --write`; do not edit by hand)
FITTED: dict[str, float] = {"eff_pw": 0.6901, "eff_dw": 0.4166, "bandwidth_gbs": 3.385}
# END FITTED

CONSTANTS = replace(Constants(), **FITTED)


def primitive_ms(prim: Primitive, c: Constants = CONSTANTS) -> float:
    if prim.kind not in KINDS:
        raise LatencyError(f"unknown primitive kind {prim.kind!r}; valid: {', '.join(KINDS)}")
    if prim.kind == "dw":
        compute = prim.macs / (c.peak_gmacs * c.eff_dw * 1e6)
    elif prim.kind in ("conv", "pw", "fc"):
        compute = prim.macs / (c.peak_gmacs * c.eff_pw * 1e6)
    else:  # pool / eltwise: memory traffic only
        compute = 0.0
    return compute + prim.nbytes / (c.bandwidth_gbs * 1e6) + c.overhead_us * 1e-3


def layer_ms(spec: LayerSpec, c: Constants = CONSTANTS) -> float:
    """Predicted Pixel 1 latency of one layer in ms."""
    return sum(primitive_ms(p, c) for p in decompose(spec))


def net_ms(specs: Sequence[LayerSpec], c: Constants = CONSTANTS) -> float:
    """Predicted end-to-end latency in ms (the sum of its layers; no extra per-net cost)."""
    return sum(layer_ms(s, c) for s in specs)


# ---- tables --------------------------------------------------------------------------------------
REFERENCES = [
    "Sandler et al. 2018, MobileNetV2, Table 4 (Pixel 1, TF-Lite, one large core)",
    "Tan et al. 2019, MnasNet, Tables 1 and 4; tensorflow/tpu models/official/mnasnet README",
    "Cai et al. 2019, ProxylessNAS, Table 2; mit-han-lab/proxylessnas README and per-op log",
    "Stamoulis et al. 2019, Single-Path NAS; enyac-group/single-path-nas pixel1_runtime_model.json",
    "tensorflow/models research/slim/nets/mobilenet README (MobileNetV2 Pixel 1 latencies)",
    "Zoph et al. 2018, NASNet-A mobile (tensorflow/models research/slim/nets/nasnet); 183 ms: MobileNetV2 Table 4",
]


def table_metadata(c: Constants = CONSTANTS, checks: Mapping[str, Any] | None = None) -> dict[str, object]:
    """Table metadata; `checks` are the model's errors on published data (nas.pixel1_calibration.report)."""
    return {
        "device": DEVICE, "source": "model", "runtime": "TFLite float32 (modelled)", "runtime_version": "n/a (model)",
        "provider": "CPU, 1 big Kryo core @2.15 GHz (modelled)", "threads": 1, "batch": 1,
        "statistic": "model prediction", "call_overhead_ms": 0.0,
        "model": "per-op roofline: t = MACs/(peak*eff[kind]) + bytes/BW + overhead per primitive "
                 "(dense/pointwise/depthwise conv, pool, FC, elementwise); see latency/devices/PIXEL1.md",
        "constants": asdict(c), "fitted": list(FIT_NAMES), **(checks or {}), "references": REFERENCES,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def build_table(space: "SearchSpace", c: Constants = CONSTANTS,
                checks: Mapping[str, Any] | None = None) -> "LatencyTable":
    """A LatencyTable of every distinct layer of `space` (raises LatencyError on unknown ops)."""
    from latency.devices.pixel1_ops import TRUST
    from latency.table import LatencyTable
    meta = table_metadata(c, checks)
    meta["trust"] = TRUST.get(space.name, "extrapolated: ops outside the calibration set (MBConv CNNs)")
    table = LatencyTable(space.name, space.options(), meta)
    for spec in space.all_layers():
        table.add(spec.key, layer_ms(spec, c))
    return table
