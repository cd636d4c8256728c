"""Google Pixel 1 latency model: a calibrated per-op roofline of one big Kryo core (TFLite float32).

We cannot time layers on a Pixel 1, so this module predicts them. Each LayerSpec is decomposed
into primitives (dense conv, 1x1 pointwise conv, depthwise conv, global pool, fully connected,
elementwise) with their multiply-accumulates and float32 bytes moved. One primitive costs

    t = MACs / (PEAK * eff[kind, k]) + bytes / BW(bytes) + OVERHEAD   (+ window / BW_L2 for a depthwise conv)

with PEAK the nominal peak of one Kryo core (2.15 GHz x one 4-lane fp32 NEON FMA per cycle =
8.6 GMAC/s); eff the fraction of it TFLite reaches for GEMM-like convs (pointwise, dense, FC),
3x3 depthwise convs and larger depthwise kernels; BW the effective bandwidth, higher for an op
whose bytes fit in the 1 MiB L2 than for one that streams from DRAM; OVERHEAD a per-op dispatch
cost; a depthwise conv also walks k input rows per output row (k / s times its input, from the L2:
`primitives.dw_window_bytes`), which prices stride-2 layers on large inputs. Activations other than ReLU/ReLU6 (h-swish, swish, the SE gate) are unfused passes. Compute
and traffic are added, not max-ed (PIXEL1.md). The six free constants are fitted once, jointly on
every published Pixel 1 source of `pixel1_data.json` (whole nets, a per-layer LUT, a per-op
profile), each source weighted equally and given a speed level of its own (a measurement session;
the tables use level 0, the 2018 sessions'), with a weak prior
(``python -m latency.devices.pixel1_calibration fit --write``), and stored in FITTED below: nothing is fitted
at run time. Leave-one-source-out errors are in PIXEL1.md and in every table's metadata.

The decomposition into primitives is `primitives.py` (extension point: `register_op("my_op", fn)`;
ops without an entry raise `LatencyError` naming the op and the known ones). The ops of the nasnet,
hytra and vit_resnas spaces are registered from `pixel1_ops.py` (imported here); their attention /
LayerNorm terms are extrapolations from the CNN calibration (PIXEL1.md). The fit and its checks on
published data are `latency/devices/pixel1_calibration.py` (they need the published nets of search_spaces/).
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
    """Model constants; the defaults of the fitted ones are the fit's starting point and its prior."""

    peak_gmacs: float = 8.6       # 2.15 GHz x 4 fp32 lanes x 1 FMA/cycle (nominal, fixed)
    eff_pw: float = 0.7           # 1x1 convs (GEMM); dense kxk convs (im2col + GEMM) and FC use it too
    eff_dw: float = 0.4           # 3x3 depthwise convs (TFLite's hand-tuned 3x3 kernel)
    eff_dw_large: float = 0.4     # depthwise convs with k >= 5 (the generic depthwise kernel)
    bandwidth_gbs: float = 3.4    # effective bandwidth of an op whose bytes exceed the L2 (DRAM-bound)
    l2_bandwidth_gbs: float = 3.4  # effective bandwidth of an op whose bytes fit in the L2
    l2_bytes: float = 1048576.0   # 1 MiB L2 of a big Kryo cluster (fixed, spec sheet)
    overhead_us: float = 2.0      # per-op dispatch cost


#: the names `fit` adjusts; the others are fixed from hardware facts
FIT_NAMES = ("eff_pw", "eff_dw", "eff_dw_large", "bandwidth_gbs", "l2_bandwidth_gbs", "overhead_us")

# BEGIN FITTED (written by `python -m latency.devices.pixel1_calibration fit --write`; do not edit by hand)
FITTED: dict[str, float] = {"eff_pw": 0.668, "eff_dw": 0.5777, "eff_dw_large": 0.4666, "bandwidth_gbs": 4.318, "l2_bandwidth_gbs": 5.968, "overhead_us": 1.967}
# END FITTED

CONSTANTS = replace(Constants(), **FITTED)

# BEGIN SESSIONS (the fitted speed level, in %, of the sessions a target stands for: `fit_sessions` of
# latency/devices/pixel1_calibration.py; tests/test_pixel1_sessions.py recomputes them)
SESSION_LEVELS_PCT: dict[str, float] = {"mbv3_session": -12.41}
# END SESSIONS


@dataclass(frozen=True)
class Session:
    """A Pixel 1 target: the model at the speed level of one measurement session."""

    target: str
    session: str | None     # source id of pixel1_data.json whose level it uses; None: level 0
    publications: str

    @property
    def level_pct(self) -> float:
        return SESSION_LEVELS_PCT[self.session] if self.session else 0.0

    @property
    def factor(self) -> float:
        return 1.0 + self.level_pct / 100.0


#: the Pixel 1 targets. `pixel1` is level 0 (the 2018 sessions, which agree within ~2%);
#: `pixel1-2019` the MobileNetV3 authors' session, for comparisons with 2019+ publications
TARGETS: dict[str, Session] = {
    "pixel1": Session("pixel1", None, "2018 sessions: MobileNetV2 (Sandler et al. 2018), MnasNet (Tan et al. 2019), "
                                      "ProxylessNAS (Cai et al. 2019), Single-Path NAS (Stamoulis et al. 2019)"),
    "pixel1-2019": Session("pixel1-2019", "mbv3_session",
                           "2019+ sessions: MobileNetV3 (Howard et al. 2019, Table 3 P-1 column and its README), "
                           "Once-for-All (Cai et al. 2020) and later papers that compare with them"),
}


def session(target: str) -> Session:
    if target not in TARGETS:
        from nas.core.errors import UnknownNameError
        raise UnknownNameError("pixel1 target", target, sorted(TARGETS))
    return TARGETS[target]


def primitive_ms(prim: Primitive, c: Constants = CONSTANTS) -> float:
    if prim.kind not in KINDS:
        raise LatencyError(f"unknown primitive kind {prim.kind!r}; valid: {', '.join(KINDS)}")
    if prim.kind == "dw":
        compute = prim.macs / (c.peak_gmacs * (c.eff_dw if prim.k <= 3 else c.eff_dw_large) * 1e6)
    elif prim.kind in ("conv", "pw", "fc"):
        compute = prim.macs / (c.peak_gmacs * c.eff_pw * 1e6)
    else:  # pool / eltwise: memory traffic only
        compute = 0.0
    bw = c.l2_bandwidth_gbs if prim.nbytes <= c.l2_bytes else c.bandwidth_gbs
    window = prim.window_nbytes / (c.l2_bandwidth_gbs * 1e6)  # depthwise row walk, from the L2
    return compute + prim.nbytes / (bw * 1e6) + window + c.overhead_us * 1e-3


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
    "tensorflow/models research/slim/nets/mobilenet README (MobileNetV2 and MobileNetV3 Pixel 1 latencies)",
    "Howard et al. 2019, Searching for MobileNetV3, Tables 1-2 (the V3 nets) and Table 3 (P-1 column, one session); "
    "data: latency/devices/pixel1_data.json",
    "Zoph et al. 2018, NASNet-A mobile (tensorflow/models research/slim/nets/nasnet); 183 ms: MobileNetV2 Table 4",
]


def table_metadata(c: Constants = CONSTANTS, checks: Mapping[str, Any] | None = None,
                   target: str = "pixel1") -> dict[str, object]:
    """Table metadata; `checks` are the model's errors on published data (latency.devices.pixel1_calibration.report)."""
    sess = session(target)
    return {
        "device": DEVICE + ("" if sess.session is None else f", speed level of session {sess.session}"),
        "target": target, "session_level_pct": sess.level_pct, "publications": sess.publications, "source": "model", "runtime": "TFLite float32 (modelled)", "runtime_version": "n/a (model)",
        "provider": "CPU, 1 big Kryo core @2.15 GHz (modelled)", "threads": 1, "batch": 1,
        "statistic": "model prediction", "call_overhead_ms": 0.0,
        "model": "per-op roofline: t = MACs/(peak*eff[kind, k]) + bytes/BW(bytes vs L2) + overhead per primitive "
                 "(+ a depthwise conv's row walk, k/s times its input, at the L2 bandwidth) "
                 "(dense/pointwise/depthwise conv, pool, FC, elementwise, unfused activations); see "
                 "latency/devices/PIXEL1.md. Modelled, not measured: no entry was timed on a phone",
        "constants": asdict(c), "fitted": list(FIT_NAMES), **(checks or {}), "references": REFERENCES,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def build_table(space: "SearchSpace", c: Constants = CONSTANTS,
                checks: Mapping[str, Any] | None = None, target: str = "pixel1") -> "LatencyTable":
    """A LatencyTable of every distinct layer of `space` with its options, at the speed level of
    `target` (TARGETS; raises LatencyError on unknown ops)."""
    from latency.devices.pixel1_ops import TRUST
    from latency.table import LatencyTable
    meta = table_metadata(c, checks, target)
    meta["trust"] = TRUST.get(space.name, "extrapolated: ops outside the calibration set (MBConv CNNs)")
    factor = session(target).factor
    table = LatencyTable(space.name, space.options(), meta)
    for spec in space.all_layers():
        table.add(spec.key, factor * layer_ms(spec, c))
    return table


def at_session(table: "LatencyTable", target: str) -> "LatencyTable":
    """A level-0 pixel1 table (a shipped one) at the speed level of `target`: every entry scaled."""
    from latency.table import LatencyTable
    sess = session(target)
    meta = {**table.metadata, "target": target, "session_level_pct": sess.level_pct,
            "publications": sess.publications,
            "device": DEVICE + ("" if sess.session is None else f", speed level of session {sess.session}")}
    out = LatencyTable(table.space, dict(table.space_options), meta, {}, table.source)
    for key, entry in table.entries.items():
        out.add(key, sess.factor * entry["ms"])
    return out
