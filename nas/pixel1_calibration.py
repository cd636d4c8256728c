"""Calibrate and check the Pixel 1 device model (latency/devices/pixel1.py) on published measurements.

The model's free constants are fitted here once, by least squares on log(predicted / published) over
the calibration nets of `search_spaces.reference_nets`, and written into pixel1.py's FITTED block
(``python -m nas.pixel1_calibration fit --write``); nothing is fitted at run time. `report` gives
every check (calibration, held-out nets, Single-Path NAS's per-layer LUT, ProxylessNAS's per-op
profile) that the shipped tables record in their metadata. Lives in the engine because it joins the
device model (latency/) with published nets written in the spaces' op vocabulary (search_spaces/).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from latency.devices import pixel1
from latency.devices.pixel1 import CONSTANTS, DEVICE, FIT_NAMES, Constants, build_table, layer_ms, net_ms, primitive_ms
from latency.devices.primitives import decompose
from nas.core.errors import LatencyError, UsageError

if TYPE_CHECKING:
    from search_spaces.reference_nets import ReferenceNet


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

    from search_spaces.reference_nets import SPNAS_LUT, SPNAS_LUT_CHOICES
    from search_spaces.catalog import get_space
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
    from search_spaces.reference_nets import PROXYLESS_PER_OP_MS, proxyless_mobile
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
    from search_spaces.reference_nets import CALIBRATION, FAMILIES, HELD_OUT
    from search_spaces.reference_nets import cell_held_out
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

    from search_spaces.reference_nets import CALIBRATION
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


def write_fitted(c: Constants, path: Path = Path(pixel1.__file__)) -> None:
    """Replace the FITTED block of this module with the fitted constants of `c`."""
    from nas.core.files import atomic_write_text
    text = path.read_text()
    body = ", ".join(f'"{k}": {getattr(c, k)!r}' for k in FIT_NAMES)
    new, n = re.subn(r"(# BEGIN FITTED[^\n]*\n).*?(# END FITTED)",
                     lambda m: f"{m.group(1)}FITTED: dict[str, float] = {{{body}}}\n{m.group(2)}", text, flags=re.S)
    if n != 1:
        raise LatencyError(f"{path} has no single FITTED block to write into")
    mode = path.stat().st_mode & 0o777
    atomic_write_text(path, new)
    path.chmod(mode)  # the temp file of the atomic write is created 0600


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
    parser = argparse.ArgumentParser(prog="python -m nas.pixel1_calibration", description=__doc__.split("\n")[0])
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
                sys.stdout.write(f"wrote the constants into {Path(pixel1.__file__)}\n")
        elif args.cmd == "errors":
            _print_report(report(CONSTANTS))
        else:
            from search_spaces.catalog import get_space
            try:
                options = json.loads(args.options)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--options is not valid JSON ({exc.msg}): {args.options!r}") from None
            table = build_table(get_space(args.space, **options), CONSTANTS, report(CONSTANTS))
            table.save(args.out)
            sys.stdout.write(f"wrote {args.out}: {len(table.entries)} layers of {args.space} on {DEVICE}\n")
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except LatencyError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
