"""Few-shot calibration for devices unlike any we ship: a fixed blend of model families.

With ~10 measured nets no single model family wins everywhere: the per-op roofline of
latency/calibrate.py ranks GPUs, CPUs, Eyeriss and the FPGA well; a plain count of the live ops per
op type wins on devices whose cost is per op (an Edge TPU, a DSP); other devices' latencies of the
same nets (latency/calibrate_basis.py) win where a shipped device behaves alike. The families:

    roofline          calibrate.py's fit (ridge NNLS on MACs / bytes / op count; built or live graph)
    counts            plain NNLS of ms on the counts of live ops per op type + a constant
    basis             NNLS on the shipped devices' latencies of the same nets (nb201 only)
    basis+counts      both column sets in one ridge NNLS (nb201 only)
    nearest           the shipped device that ranks the measured nets best, scaled (NNLS c0 + w t)
    roofline+counts   both column sets in one ridge NNLS

The selection rule, fixed before any held-out device was scored: every family is fitted on the
measured nets, its leave-one-out relative error `cv` (sum|pred - ms| / sum ms) is computed on those
same nets, and the calibrated model is the weighted mean of the families' predictions with weights
proportional to 1 / (cv + 0.001)^2. A family that fits the measured nets badly out of sample gets
almost no weight; nothing but the measured nets is looked at. (Chosen on the 27 shipped devices,
leave-device-out, against "smallest cv wins" and rank averages; `nas bench latency`. The `nearest`
family was added afterwards: +0.01 mean at 5 nets, +0.001 at 10, HELP's six 0.967 -> 0.968.)

An op type is the layer's op with its categorical parameters (strings, booleans, kernel `k`,
expansion `e`, stride `s`, `heads`): `nb201_edge(op=nor_conv_3x3)`, `mbconv(e=6,k=5,s=1)`. An op
on a path that cannot reach the output does not run (`space.live_layers`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
from scipy.optimize import nnls

from latency.calibrate import FEATURES, GRAPHS, FeatureCache, Fit, _rel, fit_best, layer_features
from latency.calibrate_basis import ColumnFit, fit_columns
from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.layer import LayerSpec
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    from latency.measured import MeasuredTable
    from latency.table import LatencyTable

FAMILIES = ("roofline", "counts", "roofline+counts", "basis", "basis+counts", "nearest")
#: the blend's weights: 1 / (cv + BLEND_EPS) ** BLEND_POWER
BLEND_EPS = 1e-3
BLEND_POWER = 2
#: integer parameters that name a choice (not a shape): part of the op type
CHOICE_PARAMS = ("k", "e", "s", "heads")


def op_type(spec: LayerSpec) -> str:
    """The layer's op with its categorical parameters, e.g. ``mbconv(e=6,k=5,s=1)``."""
    kept = [f"{k}={v}" for k, v in spec.params if isinstance(v, (str, bool)) or k in CHOICE_PARAMS]
    return f"{spec.op}({','.join(kept)})"


class CountCache:
    """Counts per op type of the layers a net runs (`graph` live: space.live_layers; built: layers)."""

    def __init__(self, space: SearchSpace, graph: str = "live") -> None:
        if graph not in GRAPHS:
            raise ValueError(f"graph {graph!r}; valid: {', '.join(GRAPHS)}")
        self.space, self.graph = space, graph
        self._list = space.live_layers if graph == "live" else space.layers

    def types(self, arch: Arch) -> list[str]:
        return [op_type(s) for s in self._list(arch)]

    def columns(self, archs: Iterable[Arch]) -> tuple[str, ...]:
        """The op types of `archs` (the fit's columns; a type no measured net holds cannot be priced)."""
        return tuple(sorted({t for a in archs for t in self.types(a)}))

    def matrix(self, archs: Iterable[Arch], columns: Sequence[str]) -> np.ndarray:
        pos = {c: i for i, c in enumerate(columns)}
        rows = []
        for a in archs:
            v = np.zeros(len(columns))
            for t in self.types(a):
                if t in pos:
                    v[pos[t]] += 1
            rows.append(v)
        return np.array(rows).reshape(-1, len(columns))


def fit_counts(c: np.ndarray, y: np.ndarray, columns: Sequence[str] = ()) -> ColumnFit:
    """Plain NNLS of ms on [1, counts] (the live-op-count baseline), with its leave-one-out error."""
    from scipy.stats import spearmanr
    c, y = np.asarray(c, float), np.asarray(y, float)

    def solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        sol, _ = nnls(np.column_stack([np.ones(len(b)), a]), b, maxiter=100 * (a.shape[1] + 1))
        return sol

    loo = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        s = solve(c[keep], y[keep])
        loo[i] = s[0] + c[i] @ s[1:]
    s = solve(c, y)
    rho = float(spearmanr(loo, y)[0]) if np.ptp(loo) > 0 and np.ptp(y) > 0 else None
    return ColumnFit("counts", tuple(columns), float(s[0]), tuple(float(v) for v in s[1:]), 0.0,
                     _rel(loo, y), rho, len(y))


def _rank_nearest(reference: np.ndarray, y: np.ndarray) -> int:
    """The reference column whose values rank `y` best (Spearman; the first on ties)."""
    from scipy.stats import spearmanr
    rhos = [float(spearmanr(reference[:, k], y)[0]) if np.ptp(reference[:, k]) > 0 else -1.0
            for k in range(reference.shape[1])]
    return int(np.nanargmax(rhos))


def fit_nearest(reference: np.ndarray, y: np.ndarray) -> tuple[int, ColumnFit]:
    """The shipped device that ranks the measured nets best, scaled: ms = c0 + w * t_device (NNLS);
    leave-one-out redoes the choice of the device in every fold."""
    from scipy.stats import spearmanr
    reference, y = np.asarray(reference, float), np.asarray(y, float)

    def solve(col: np.ndarray, b: np.ndarray) -> np.ndarray:
        sol, _ = nnls(np.column_stack([np.ones(len(b)), col]), b)
        return sol

    loo = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        k = _rank_nearest(reference[keep], y[keep])
        s = solve(reference[keep, k], y[keep])
        loo[i] = s[0] + s[1] * reference[i, k]
    k = _rank_nearest(reference, y)
    s = solve(reference[:, k], y)
    rho = float(spearmanr(loo, y)[0]) if np.ptp(loo) > 0 and np.ptp(y) > 0 else None
    return k, ColumnFit("nearest", (str(k),), float(s[0]), (float(s[1]),), 0.0, _rel(loo, y), rho, len(y))


@dataclass(frozen=True)
class Blend:
    """The calibrated model: families, their fits, leave-one-out errors and blend weights."""

    families: tuple[str, ...]
    fits: tuple[Fit | ColumnFit, ...]
    cv_errors: tuple[float, ...]
    weights: tuple[float, ...]
    count_columns: tuple[str, ...]

    @property
    def roofline(self) -> Fit:
        fit = self.fits[self.families.index("roofline")]
        assert isinstance(fit, Fit)
        return fit

    def family_predictions(self, xs: dict[str, np.ndarray], counts: np.ndarray,
                           reference: np.ndarray | None) -> dict[str, np.ndarray]:
        """Each family's prediction for archs with roofline features per graph (archs x FEATURES),
        op-type counts (archs x count_columns) and reference latencies (archs x devices, or None)."""
        x = xs[self.roofline.graph]
        cols = {"roofline": x, "counts": counts, "roofline+counts": np.hstack([x, counts])}
        if reference is not None:
            cols.update({"basis": reference, "basis+counts": np.hstack([reference, counts])})
            if "nearest" in self.families:
                k = int(self.fits[self.families.index("nearest")].columns[0])
                cols["nearest"] = reference[:, [k]]
        return {f: m.predict(cols[f]) for f, m in zip(self.families, self.fits)}

    def predict(self, xs: dict[str, np.ndarray], counts: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
        preds = self.family_predictions(xs, counts, reference)
        return sum(w * preds[f] for f, w in zip(self.families, self.weights))

    def summary(self) -> dict[str, dict[str, float]]:
        return {f: {"cv_error": e, "weight": w} for f, e, w in zip(self.families, self.cv_errors, self.weights)}


def blend_weights(cv: Sequence[float]) -> tuple[float, ...]:
    raw = np.array([1.0 / (e + BLEND_EPS) ** BLEND_POWER for e in cv])
    return tuple(float(v) for v in raw / raw.sum())


def fit_blend(xs: dict[str, np.ndarray], counts: np.ndarray, y: np.ndarray, reference: np.ndarray | None = None,
              count_columns: Sequence[str] = ()) -> Blend:
    """Fit every family on the measured nets (features per graph, op-type counts, reference devices'
    latencies or None) and blend them by leave-one-out error (the fixed rule of this module)."""
    y = np.asarray(y, float)
    if np.ptp(y) <= 1e-9 * max(float(np.abs(y).max()), 1.0):
        raise UsageError(f"all {len(y)} measured nets cost the same ({y[0]:g} ms): nothing to fit; "
                         f"measure nets of different sizes")
    roof = fit_best(xs, y)
    x = xs[roof.graph]
    both = fit_columns("roofline+counts", [*FEATURES, *count_columns], np.hstack([x, counts]), y)
    fits: list[Fit | ColumnFit] = [roof, fit_counts(counts, y, count_columns), both]
    families = ["roofline", "counts", "roofline+counts"]
    if reference is not None:
        fits += [fit_columns("basis", [], reference, y),
                 fit_columns("basis+counts", [], np.hstack([reference, counts]), y)]
        fits.append(fit_nearest(reference, y)[1])
        families += ["basis", "basis+counts", "nearest"]
    cv = tuple(float(f.cv_error) for f in fits)
    return Blend(tuple(families), tuple(fits), cv, blend_weights(cv), tuple(count_columns))


def layer_model(blend: Blend, x: np.ndarray | None = None, y: np.ndarray | None = None) -> dict[str, object]:
    """The blend of the per-layer families as one linear per-layer model (they are all linear):
    ms(layer) = features(layer) @ feature_weights + op_type_ms[op type of the layer], plus
    intercept_ms once per net. Stored in the table's metadata, it prices the layers of any options
    of the space (latency/targets.py rebuilds the table for other options from it)."""
    if any(f.startswith("basis") for f in blend.families):
        raise ValueError("a blend with a basis family prices whole nets, not layers")
    nf = len(FEATURES)
    fw = np.zeros(nf)
    tw = np.zeros(len(blend.count_columns))
    for f, m, w in zip(blend.families, blend.fits, blend.weights):
        v = np.asarray(m.weights, float)
        if f == "roofline":
            fw += w * v
        elif f == "counts":
            tw += w * v
        else:   # roofline+counts: features first, then the op types
            fw += w * v[:nf]
            tw += w * v[nf:]
    c0 = intercept(blend)
    moved: list[str] = []
    if x is not None and y is not None:
        # a feature that is the same in every measured net (the stem's MACs, the classifier's) cannot be
        # told from the intercept: its cost sits in c0, which would then not change with the options
        # (resolution, width, classes). Price such features by the two-constant model (one rate for all
        # MACs, one per-op cost) and take that cost out of c0 (never below 0): the same predictions for
        # the measured nets, and a stem / head that scale with the options elsewhere.
        from latency.calibrate import _prior
        fixed = np.ptp(x, axis=0) <= 1e-9 * np.maximum(np.abs(x).max(axis=0), 1.0)
        fixed &= np.abs(fw * x.mean(axis=0)) <= 1e-9 * float(np.mean(y))   # and left unpriced by the fit
        prior = _prior(x, np.asarray(y, float)) * fixed
        cost = float(prior @ x[0])
        if cost > 0:
            alpha = min(1.0, c0 / cost)
            fw += alpha * prior
            c0 -= alpha * cost
            moved = [f for f, v in zip(FEATURES, prior) if v > 0]
    out: dict[str, object] = {"intercept_ms": c0, "graph": blend.roofline.graph,
                              "fixed_features_priced_by_prior": moved,
            "feature_weights": dict(zip(FEATURES, (float(x) for x in fw))),
            "op_type_ms": dict(zip(blend.count_columns, (float(x) for x in tw))),
            "note": "ms(layer) = features(layer) @ feature_weights + op_type_ms[op type] (0 for an op type "
                    "none of the measured nets holds); intercept_ms once per net. For other options of the "
                    "space an op type's cost is scaled by the layer's feature cost over op_type_reference_ms "
                    "(a count does not know the layer's size)"}
    return out


def _type_reference(space: SearchSpace, model: dict) -> dict[str, float]:
    """Per op type, the mean feature cost (features @ feature_weights) of the space's layers of that type."""
    fw = np.array([float(model["feature_weights"].get(f, 0.0)) for f in FEATURES])
    acc: dict[str, list[float]] = {}
    for spec in space.all_layers():
        acc.setdefault(op_type(spec), []).append(float(layer_features(spec) @ fw))
    return {t: float(np.mean(v)) for t, v in acc.items()}


def priced_table(space: SearchSpace, meta: dict) -> "LatencyTable":
    """A per-layer table of `space` (any options) priced by the `layer_model` in `meta`."""
    from latency.table import LatencyTable
    model = meta["layer_model"]
    meta = {**meta, "call_overhead_ms": float(model["intercept_ms"])}
    fw = np.array([float(model["feature_weights"].get(f, 0.0)) for f in FEATURES])
    types = model["op_type_ms"]
    ref = model.get("op_type_reference_ms") or {}
    same = json.dumps(space.options(), sort_keys=True) == json.dumps(meta.get("measured_options"), sort_keys=True)
    table = LatencyTable(space.name, space.options(), dict(meta))
    for spec in space.all_layers():
        feat = float(layer_features(spec) @ fw)
        t = op_type(spec)
        count = float(types.get(t, 0.0))
        if not same and ref.get(t, 0.0) > 0:
            count *= feat / ref[t]
        table.add(spec.key, max(0.0, feat + count))
    return table


def intercept(blend: Blend) -> float:
    return float(sum(w * m.intercept_ms for m, w in zip(blend.fits, blend.weights)))


def measured_inputs(space: SearchSpace, archs: Sequence[Arch], count_graph: str = "live"
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, tuple[str, ...]]:
    """Roofline features per graph, op-type counts and their columns of the measured nets."""
    xs = {g: FeatureCache(space, g).matrix(archs) for g in GRAPHS}
    cc = CountCache(space, count_graph)
    columns = cc.columns(archs)
    return xs, cc.matrix(archs, columns), columns


# ---- `nas latency calibrate` ----------------------------------------------------------------------------
def calibrate_table(space: SearchSpace, rows: Sequence[tuple[Arch, float]], basis: Sequence[str] | None,
                    device: str, source: str) -> tuple[Blend, "LatencyTable | MeasuredTable"]:
    """Fit the blend to the measured nets and build its table: with a basis (nb201 with the benchmark's
    options only) a measured-kind table of the prediction for every arch the shipped devices cover; else
    a per-layer table (the per-layer families are additive over layers), on the roofline's graph."""
    import datetime as dt
    from latency.measured import BENCH_OPTIONS, BENCH_SPACE, MeasuredTable
    archs = [a for a, _ in rows]
    y = np.array([ms for _, ms in rows])
    bench = space.name == BENCH_SPACE and all(space.options().get(k) == v for k, v in BENCH_OPTIONS.items())
    if basis is not None and not bench:
        raise UsageError(f"--basis uses the measured NAS-Bench-201 devices: it needs --space {BENCH_SPACE} with the "
                         f"benchmark's nets ({', '.join(f'{k}={v}' for k, v in BENCH_OPTIONS.items())})")
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    meta_common = {"device": device, "units": "ms", "batch": 1, "statistic": "model prediction",
                   "measurements": source, "archs_measured": len(rows), "date": date,
                   "rule": "weighted mean of the families' predictions, weights 1/(cv + 0.001)^2 with cv the "
                           "leave-one-out relative error on the measured nets (latency/calibrate_select.py)"}
    if bench and basis is not None:
        from latency.bench_devices import nb201_latency
        data = nb201_latency()
        xs, counts, columns = measured_inputs(space, archs, "live")
        blocks = [space.format(a) for a in archs]
        ref = None if basis is None else np.array([[data.ms[d][b] for d in basis] for b in blocks])
        blend = fit_blend(xs, counts, y, ref, columns)
        everything = sorted(data.index, key=data.index.__getitem__)
        all_archs = [space.parse(b) for b in everything]
        all_xs = {g: FeatureCache(space, g).matrix(all_archs) for g in GRAPHS}
        all_counts = CountCache(space, "live").matrix(all_archs, columns)
        all_ref = None if basis is None else np.array([[data.ms[d][b] for d in basis] for b in everything])
        pred = blend.predict(all_xs, all_counts, all_ref)
        floor = 1e-3 * float(y.min())   # a measured-kind table holds positive times only
        meta = {**meta_common, "source": f"predicted from {len(rows)} measured nets ({source})",
                "model": "blend of " + ", ".join(blend.families), "families": blend.summary(),
                "basis": list(basis or []), "graph": blend.roofline.graph}
        return blend, MeasuredTable(space.name, space.options(), meta,
                                    {b: max(float(p), floor) for b, p in zip(everything, pred)})
    xs, counts, columns = measured_inputs(space, archs, "live")
    blend = fit_blend(xs, counts, y, None, columns)
    if blend.roofline.graph != "live":   # one graph for every per-layer family (differs on nb201 only)
        cc = CountCache(space, blend.roofline.graph)
        columns = cc.columns(archs)
        blend = fit_blend(xs, cc.matrix(archs, columns), y, None, columns)
    meta = {**meta_common, "source": "fitted from end-to-end measurements", "runtime": "as measured by the user",
            "provider": "n/a (fitted)", "threads": "n/a",
            "graph": blend.roofline.graph, "model": "blend of " + ", ".join(blend.families) + " (per layer)",
            "families": blend.summary(), "constants": blend.roofline.constants(),
            "measured_options": space.options(),
            "layer_model": layer_model(blend, FeatureCache(space, blend.roofline.graph).matrix(archs), y)}
    meta["layer_model"]["op_type_reference_ms"] = _type_reference(space, meta["layer_model"])
    return blend, priced_table(space, meta)
