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
`reference_nets.CALIBRATION` (``python -m latency.devices.pixel1 fit --write``), and stored in
FITTED below: nothing is fitted at run time. See PIXEL1.md for the errors and the limits.

Extension point: `DECOMPOSE` maps a LayerSpec op name to a function returning its primitives.
A space that adds an op registers one with `register_op("my_op", fn)`; ops without an entry raise
`LatencyError` naming the op and the known ones. The ops of the nasnet, hytra and vit_resnas spaces
are registered from `pixel1_ops.py` (imported at the end of this module); their attention /
LayerNorm terms are extrapolations from the CNN calibration (PIXEL1.md).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from nas.errors import LatencyError, UsageError
from nas.layer import LayerSpec

if TYPE_CHECKING:
    from latency.devices.reference_nets import ReferenceNet
    from latency.table import LatencyTable
    from nas.space import SearchSpace

DEVICE = "Google Pixel 1 (Snapdragon 821, 1 big core)"
F32 = 4  # bytes per float32 value


# ---- primitives ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Primitive:
    kind: str       # one of KINDS
    macs: int       # multiply-accumulates (pool / eltwise: elements touched, not costed)
    nbytes: int     # float32 bytes read + written (activations in and out + weights)


KINDS = ("conv", "pw", "dw", "fc", "pool", "eltwise")


def conv2d(cin: int, cout: int, k: int, s: int, h: int, w: int, groups: int = 1) -> Primitive:
    """A 'same'-padded conv; kind from its shape: depthwise, 1x1 pointwise or dense kxk."""
    ho, wo = (h - 1) // s + 1, (w - 1) // s + 1
    macs = ho * wo * cout * (cin // groups) * k * k
    nbytes = F32 * (cin * h * w + cout * ho * wo + cout * (cin // groups) * k * k)
    kind = "dw" if groups == cin == cout and groups > 1 else ("pw" if k == 1 else "conv")
    return Primitive(kind, macs, nbytes)


def linear(cin: int, cout: int) -> Primitive:
    return Primitive("fc", cin * cout, F32 * (cin + cout + cin * cout))


def global_pool(c: int, h: int, w: int) -> Primitive:
    return Primitive("pool", c * h * w, F32 * (c * h * w + c))


def eltwise(n: int, operands: int = 2) -> Primitive:
    """Elementwise op on n outputs reading `operands` tensors (add, mul by a broadcast scale)."""
    return Primitive("eltwise", n, F32 * n * (operands + 1))


def _conv_bn_act(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    _, h, w = spec.input_shape
    return [conv2d(p["cin"], p["cout"], p["k"], p["s"], h, w, p.get("groups", 1))]


def _mbconv(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    mid, se = cin * p["e"], float(p.get("se", 0.0))
    out = [conv2d(cin, mid, 1, 1, h, w)] if p["e"] != 1 else []
    out.append(conv2d(mid, mid, p["k"], p["s"], h, w, groups=mid))
    if se > 0:  # squeeze-excite: pool, FC down (+relu), FC up (+sigmoid), scale the tensor
        red = max(1, int(cin * se))
        out += [global_pool(mid, ho, wo), linear(mid, red), linear(red, mid), eltwise(mid * ho * wo)]
    out.append(conv2d(mid, p["cout"], 1, 1, ho, wo))
    if p["s"] == 1 and cin == p["cout"]:
        out.append(eltwise(p["cout"] * ho * wo))
    return out


def _head(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    feat = p["cmid"] or cin
    out = [conv2d(cin, p["cmid"], 1, 1, h, w)] if p["cmid"] else []
    return out + [global_pool(feat, h, w), linear(feat, p["classes"])]


def _dwsep(spec: LayerSpec) -> list[Primitive]:
    p = spec.kwargs
    cin, h, w = spec.input_shape
    _, ho, wo = spec.output_shape
    return [conv2d(cin, cin, p["k"], p["s"], h, w, groups=cin), conv2d(cin, p["cout"], 1, 1, ho, wo)]


#: op name -> primitive decomposition; the extension point for ops other spaces add.
DECOMPOSE: dict[str, Callable[[LayerSpec], list[Primitive]]] = {
    "conv_bn_act": _conv_bn_act, "mbconv": _mbconv, "head": _head, "dwsep": _dwsep}


def register_op(op: str, fn: Callable[[LayerSpec], list[Primitive]]) -> None:
    """Teach the model a new LayerSpec op; build its primitives with conv2d/linear/global_pool/eltwise.

    E.g. a separable conv ``sep(cin, cout, k, s)`` on a (C, H, W) input::

        register_op("sep", lambda s: [conv2d(s.kwargs["cin"], s.kwargs["cin"], s.kwargs["k"], s.kwargs["s"],
                                             *s.input_shape[1:], groups=s.kwargs["cin"]),
                                      conv2d(s.kwargs["cin"], s.kwargs["cout"], 1, 1, *s.output_shape[1:])])

    A token-shaped op (N, D) maps its matmuls to `conv2d(cin, cout, 1, 1, N, 1)` (a GEMM with
    N rows) and its softmax / norms / residuals to `eltwise`.
    """
    if op in DECOMPOSE:
        raise ValueError(f"pixel1 model already knows op {op!r}")
    DECOMPOSE[op] = fn


def decompose(spec: LayerSpec) -> list[Primitive]:
    fn = DECOMPOSE.get(spec.op)
    if fn is None:
        raise LatencyError(f"the Pixel 1 model has no decomposition for op {spec.op!r} (layer {spec.key}); "
                           f"known ops: {', '.join(sorted(DECOMPOSE))}. Add one with "
                           f"latency.devices.pixel1.register_op({spec.op!r}, fn)")
    return fn(spec)


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

# BEGIN FITTED (written by `python -m latency.devices.pixel1 fit --write`; do not edit by hand)
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


# ---- calibration ---------------------------------------------------------------------------------
def _errors(nets: Sequence["ReferenceNet"], c: Constants) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for net in nets:
        pred = net_ms(net.build(), c)
        rows.append({"name": net.name, "published_ms": net.published_ms, "predicted_ms": round(pred, 3),
                     "error_pct": round(100.0 * (pred / net.published_ms - 1.0), 3), "source": net.source})
    return rows


def _summary(errs: Sequence[float]) -> dict[str, float]:
    a = sorted(abs(e) for e in errs)
    mid = len(a) // 2
    median = a[mid] if len(a) % 2 else (a[mid - 1] + a[mid]) / 2
    return {"n": len(a), "median_abs_error_pct": round(median, 2), "max_abs_error_pct": round(a[-1], 2),
            "mean_error_pct": round(sum(errs) / len(errs), 2)}


def spnas_check(c: Constants = CONSTANTS, archs: int = 500, seed: int = 0) -> dict[str, object]:
    """Model vs Single-Path NAS's measured Pixel 1 LUT on the `mbconv` space (not used in the fit).

    Per layer: positions 0..19, 4 choices each. Per arch: `archs` random archs (last layer k3e6, as
    in that LUT), their total = the LUT's 19.5999 ms for stem + first layer + last layer + head
    (singlepath_supernet.py) plus the chosen layers (skip = 0) vs the model's sum of layers.
    """
    import numpy as np
    from scipy.stats import spearmanr

    from latency.devices.reference_nets import SPNAS_LUT, SPNAS_LUT_CHOICES
    from search_spaces import get_space
    space = get_space("mbconv")
    fixed, per = space.separable_layers()
    model = [{tok: layer_ms(per[pos][space.decisions[pos].choices.index(tok)][0], c) for tok in SPNAS_LUT_CHOICES}
             for pos in range(20)]
    errs = [100.0 * (model[pos][tok] / ms - 1.0)
            for pos in range(20) for tok, ms in zip(SPNAS_LUT_CHOICES, SPNAS_LUT[pos + 1])]
    last = per[20][space.decisions[20].choices.index("k3e6")][0]
    base = sum(layer_ms(f, c) for f in fixed) + layer_ms(last, c)
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for _ in range(archs):
        genes = [space.decisions[pos].choices[rng.integers(len(space.decisions[pos].choices))] for pos in range(20)]
        genes = [g if g == "skip" else SPNAS_LUT_CHOICES[rng.integers(4)] for g in genes]
        ours.append(base + sum(model[p][g] for p, g in enumerate(genes) if g != "skip"))
        theirs.append(19.5999 + sum(SPNAS_LUT[p + 1][SPNAS_LUT_CHOICES.index(g)] for p, g in enumerate(genes) if g != "skip"))
    arch_errs = [100.0 * (a / b - 1.0) for a, b in zip(ours, theirs)]
    return {"source": "enyac-group/single-path-nas nas-search/pixel1_runtime_model.json",
            "per_layer": _summary(errs),
            "archs": {**_summary(arch_errs), "spearman": round(float(spearmanr(ours, theirs)[0]), 4), "seed": seed}}


def proxyless_op_check(c: Constants = CONSTANTS) -> dict[str, object]:
    """Model vs the per-op TFLite profile of ProxylessNAS-mobile, per primitive kind."""
    from latency.devices.reference_nets import PROXYLESS_PER_OP_MS, proxyless_mobile
    prims = [p for s in proxyless_mobile() for p in decompose(s) if p.kind in ("conv", "pw", "dw", "fc")]
    if len(prims) != len(PROXYLESS_PER_OP_MS):
        raise LatencyError(f"per-op profile has {len(PROXYLESS_PER_OP_MS)} ops, the model {len(prims)}")
    out: dict[str, object] = {"source": "mit-han-lab/proxylessnas logs/proxyless_mobile_10_latency.txt"}
    for kind in ("pw", "dw"):
        out[kind] = _summary([100.0 * (primitive_ms(p, c) / t - 1.0)
                              for p, t in zip(prims, PROXYLESS_PER_OP_MS) if p.kind == kind])
    return out


def report(c: Constants = CONSTANTS) -> dict[str, object]:
    """Every check of the model with constants `c` (what `fit` prints and the table records)."""
    from latency.devices.reference_nets import CALIBRATION, FAMILIES, HELD_OUT
    from latency.devices.pixel1_ops import cell_held_out
    fam = _errors(FAMILIES, c)
    return {"calibration": _errors(CALIBRATION, c), "held_out": _errors(HELD_OUT, c),
            "cell_held_out": _errors(cell_held_out(), c),
            "families": {"sources": sorted({str(r["source"]) for r in fam}),
                         **_summary([float(r["error_pct"]) for r in fam])},  # type: ignore[arg-type]
            "spnas_lut": spnas_check(c), "proxyless_per_op": proxyless_op_check(c)}


def fit(start: Constants = Constants(), names: Sequence[str] = FIT_NAMES) -> Constants:
    """Least squares on log(predicted / published) over the calibration nets (deterministic)."""
    import numpy as np
    from scipy.optimize import least_squares

    from latency.devices.reference_nets import CALIBRATION
    nets = [(n.build(), n.published_ms) for n in CALIBRATION]

    def make(x: np.ndarray) -> Constants:
        return replace(start, **{k: float(math.exp(v)) for k, v in zip(names, x)})

    def residuals(x: np.ndarray) -> list[float]:
        c = make(x)
        return [math.log(net_ms(specs, c) / pub) for specs, pub in nets]

    x0 = np.log([getattr(start, k) for k in names])
    res = least_squares(residuals, x0, method="trf")
    # 4 significant digits: what is written into FITTED, so reports made later agree exactly
    return replace(start, **{k: float(f"{getattr(make(res.x), k):.4g}") for k in names})


def write_fitted(c: Constants, path: Path = Path(__file__)) -> None:
    """Replace the FITTED block of this module with the fitted constants of `c`."""
    from latency.table import atomic_write_text
    text = path.read_text()
    body = ", ".join(f'"{k}": {getattr(c, k)!r}' for k in FIT_NAMES)
    new, n = re.subn(r"(# BEGIN FITTED[^\n]*\n).*?(# END FITTED)",
                     lambda m: f"{m.group(1)}FITTED: dict[str, float] = {{{body}}}\n{m.group(2)}", text, flags=re.S)
    if n != 1:
        raise LatencyError(f"{path} has no single FITTED block to write into")
    mode = path.stat().st_mode & 0o777
    atomic_write_text(path, new)
    path.chmod(mode)  # the temp file of the atomic write is created 0600


# ---- tables --------------------------------------------------------------------------------------
REFERENCES = [
    "Sandler et al. 2018, MobileNetV2, Table 4 (Pixel 1, TF-Lite, one large core)",
    "Tan et al. 2019, MnasNet, Tables 1 and 4; tensorflow/tpu models/official/mnasnet README",
    "Cai et al. 2019, ProxylessNAS, Table 2; mit-han-lab/proxylessnas README and per-op log",
    "Stamoulis et al. 2019, Single-Path NAS; enyac-group/single-path-nas pixel1_runtime_model.json",
    "tensorflow/models research/slim/nets/mobilenet README (MobileNetV2 Pixel 1 latencies)",
    "Zoph et al. 2018, NASNet-A mobile (tensorflow/models research/slim/nets/nasnet); 183 ms: MobileNetV2 Table 4",
]


def table_metadata(c: Constants = CONSTANTS) -> dict[str, object]:
    return {
        "device": DEVICE, "source": "model", "runtime": "TFLite float32 (modelled)", "runtime_version": "n/a (model)",
        "provider": "CPU, 1 big Kryo core @2.15 GHz (modelled)", "threads": 1, "batch": 1,
        "statistic": "model prediction", "call_overhead_ms": 0.0,
        "model": "per-op roofline: t = MACs/(peak*eff[kind]) + bytes/BW + overhead per primitive "
                 "(dense/pointwise/depthwise conv, pool, FC, elementwise); see latency/devices/PIXEL1.md",
        "constants": asdict(c), "fitted": list(FIT_NAMES), **report(c), "references": REFERENCES,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def build_table(space: "SearchSpace", c: Constants = CONSTANTS) -> "LatencyTable":
    """A LatencyTable of every distinct layer of `space` (raises LatencyError on unknown ops)."""
    from latency.devices.pixel1_ops import TRUST
    from latency.table import LatencyTable
    meta = table_metadata(c)
    meta["trust"] = TRUST.get(space.name, "extrapolated: ops outside the calibration set (MBConv CNNs)")
    table = LatencyTable(space.name, space.options(), meta)
    for spec in space.all_layers():
        table.add(spec.key, layer_ms(spec, c))
    return table


# ---- command line --------------------------------------------------------------------------------
def _print_report(rep: dict[str, object]) -> None:
    out = sys.stdout.write
    for group in ("calibration", "held_out", "cell_held_out"):
        out(f"{group}:\n")
        for r in rep[group]:  # type: ignore[attr-defined]
            out(f"  {r['name']:<26} published {r['published_ms']:7.2f}  predicted {r['predicted_ms']:7.2f}"
                f"  error {r['error_pct']:+6.1f}%   {r['source']}\n")
    for key in ("families", "spnas_lut"):
        out(f"{key}: {json.dumps(rep[key])}\n")
    out(f"proxyless_per_op: {json.dumps(rep['proxyless_per_op'])}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latency.devices.pixel1", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit the free constants on the calibration nets and print every error")
    f.add_argument("--write", action="store_true", help="write the fitted constants into this module")
    sub.add_parser("errors", help="print the errors of the current constants")
    t = sub.add_parser("table", help="write a LatencyTable of a space's layers")
    t.add_argument("--space", default="mbconv")
    t.add_argument("--options", default="{}", help="space options as JSON, e.g. '{\"width_mult\": 0.75}'")
    t.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fit":
            c = fit()
            sys.stdout.write(f"fitted: {json.dumps({k: getattr(c, k) for k in FIT_NAMES})}\n")
            _print_report(report(c))
            if args.write:
                write_fitted(c)
                sys.stdout.write(f"wrote the constants into {Path(__file__)}\n")
        elif args.cmd == "errors":
            _print_report(report(CONSTANTS))
        else:
            from search_spaces import get_space
            try:
                options = json.loads(args.options)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--options is not valid JSON ({exc.msg}): {args.options!r}") from None
            table = build_table(get_space(args.space, **options))
            table.save(args.out)
            sys.stdout.write(f"wrote {args.out}: {len(table.entries)} layers of {args.space} on {DEVICE}\n")
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except LatencyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


# registers the cell / hybrid / ViT ops (after everything pixel1_ops imports from here is defined)
from latency.devices import pixel1_ops  # noqa: E402,F401

if __name__ == "__main__":  # run the imported module's main: its DECOMPOSE is the one the ops went into
    from latency.devices import pixel1 as _module  # noqa: PLW0406 (see the comment above)
    sys.exit(_module.main())
