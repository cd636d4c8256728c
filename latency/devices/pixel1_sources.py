"""The published Pixel 1 measurements the device model is fitted and validated on, as model inputs.

`latency/devices/pixel1_data.json` holds the figures (one entry per source: a paper table, a README
table, a released lookup table or per-op profile), with citations. This module turns every point
into what the model prices: the primitives of a whole net, of one layer, or a single primitive, and
sums them into the six features the model is linear in (`FEATURES`), so that fitting and
leave-one-source-out validation (latency.devices.pixel1_calibration) are fast and exact.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from latency.devices.pixel1 import CONSTANTS, Constants
from latency.devices.primitives import Primitive, decompose
from nas.core.errors import LatencyError

DATA = Path(__file__).resolve().parent / "pixel1_data.json"

#: the model is t = sum(features * theta): compute at the three rates, bytes at the two bandwidths, op count
FEATURES = ("gmac_pw", "gmac_dw", "gmac_dw_large", "mb_l2", "mb_dram", "ops")


@dataclass(frozen=True)
class Point:
    source: str
    name: str
    measured_ms: float
    features: tuple[float, ...]
    stride: int = 1    # the largest conv stride in the point (1 for a whole net: not used there)


@dataclass(frozen=True)
class Source:
    id: str
    kind: str          # whole_net / per_layer / per_op
    what: str
    citation: str
    points: tuple[Point, ...]


def features(prims: list[Primitive], c: Constants = CONSTANTS) -> tuple[float, ...]:
    """Sums of the primitives' work by rate; `theta(c) @ features` is `sum(primitive_ms(p, c))`."""
    f = [0.0] * len(FEATURES)
    for p in prims:
        if p.kind == "dw":
            f[1 if p.k <= 3 else 2] += p.macs / 1e9
        elif p.kind in ("conv", "pw", "fc"):
            f[0] += p.macs / 1e9
        f[3 if p.nbytes <= c.l2_bytes else 4] += p.nbytes / 1e6
        f[3] += p.window_nbytes / 1e6   # the depthwise row walk is L2 traffic (primitives.dw_window_bytes)
        f[5] += 1
    return tuple(f)


def theta(c: Constants) -> np.ndarray:
    """ms per unit of each feature."""
    return np.array([1e3 / (c.peak_gmacs * c.eff_pw), 1e3 / (c.peak_gmacs * c.eff_dw),
                     1e3 / (c.peak_gmacs * c.eff_dw_large), 1.0 / c.l2_bandwidth_gbs, 1.0 / c.bandwidth_gbs,
                     c.overhead_us * 1e-3])


def _net_points(src: dict) -> list[Point]:
    from search_spaces.reference_nets import build_net
    out = []
    for p in src["points"]:
        prims = [q for s in build_net(p["net"], **p["args"]) for q in decompose(s)]
        out.append(Point(src["id"], p["name"], float(p["ms"]), features(prims)))
    return out


def _layer_points(src: dict) -> list[Point]:
    from search_spaces.catalog import get_space
    space = get_space("mbconv")
    _, per = space.separable_layers()
    out = []
    for p in src["points"]:
        pos = int(p["block"]) - 1
        spec = per[pos][space.decisions[pos].choices.index(p["choice"])][0]
        out.append(Point(src["id"], f"block {p['block']} {p['choice']}",
                         float(p["ms"]), features(decompose(spec)), int(spec.kwargs["s"])))
    return out


def _op_points(src: dict) -> list[Point]:
    from search_spaces.reference_nets import build_net
    prims = [q for s in build_net(src["net"]) for q in decompose(s) if q.kind in ("conv", "pw", "dw", "fc")]
    if len(prims) != len(src["points"]):
        raise LatencyError(f"per-op source {src['id']} has {len(src['points'])} ops, the model {len(prims)}")
    return [Point(src["id"], f"op {p['index']} ({prims[p['index']].kind})",
                  float(p["ms"]), features([prims[p["index"]]]), prims[p["index"]].s) for p in src["points"]]


BUILD = {"whole_net": _net_points, "per_layer": _layer_points, "per_op": _op_points}


@lru_cache(maxsize=1)
def sources(path: Path = DATA) -> tuple[Source, ...]:
    """Every source of the data file, its points priced into features (cached: the nets are fixed)."""
    data = json.loads(Path(path).read_text())
    out = []
    for src in data["sources"]:
        build = BUILD.get(src["kind"])
        if build is None:
            raise LatencyError(f"source {src['id']}: unknown kind {src['kind']!r}; valid: {', '.join(BUILD)}")
        out.append(Source(src["id"], src["kind"], src["what"], src["citation"], tuple(build(src))))
    return tuple(out)


def source_ids() -> list[str]:
    return [s.id for s in sources()]
