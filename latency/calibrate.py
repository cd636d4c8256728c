"""Calibrate a device model from end-to-end latencies of a few nets (`nas latency calibrate`).

For a device that cannot be profiled layer by layer (a vendor NPU, a phone reached only through
its own benchmark tool) the user measures a few whole nets. We generalise the pixel1 roofline
(latency/devices/pixel1.py): every layer is decomposed into the primitives of
latency/devices/primitives.py, and a net costs

    t = c0 + sum over its primitives of  MACs / rate[kind] + bytes / BW[class] + per-op cost

i.e. a linear model on per-arch features (MACs per compute kind, bytes moved by compute and by
memory-bound primitives, primitive count) with non-negative constants (a rate or a bandwidth is
never negative). With ~10 nets the features are nearly collinear, so the fit is a ridge-regularised
non-negative least squares on features scaled by their mean over the nets (each scaled weight is then
"ms of an average net") and errors weighted as relative errors (timing noise is multiplicative:
a 60 ms outlier must not outweigh ten 10 ms nets), shrunk toward a two-constant model (one rate for all MACs, one per-op cost,
fitted first on the same nets); the ridge strength is chosen by leave-one-out error over a fixed grid.
Features that do not vary over the nets are not identifiable from them: their cost is left to c0.

The model is additive over layers, so the result is a normal LatencyTable: each layer of the space
priced by the fitted constants, c0 as the table's per-call overhead (LUTModel adds it once). Its
predictions equal the fit's exactly.

Which ops count: every layer `space.layers(arch)` lists, i.e. every op the benchmark nets build,
also ops that a `none` edge cuts off from the output of an nb201 cell. On the 27 measured NB201
devices counting only the live ops fits worse (`nas bench latency`, and the commit notes): the
devices run dead ops too.
"""
from __future__ import annotations

import csv
import datetime as _dt
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from scipy.optimize import nnls

import latency.devices.pixel1_ops  # noqa: F401  (registers the decompositions of every space's ops)
from latency.devices.primitives import decompose
from latency.table import LatencyTable
from nas.core.arch import Arch
from nas.core.errors import ArchError, NasError, UsageError
from nas.core.layer import LayerSpec
from nas.core.space import SearchSpace

#: per-arch features; units: MACs, bytes, primitive count
FEATURES = ("macs_conv", "macs_pw", "macs_dw", "macs_fc", "bytes_compute", "bytes_memory", "ops")
#: how each fitted weight is reported: (name, factor from ms-per-feature-unit to that unit)
UNITS = {"macs_conv": ("ms_per_gmac_conv", 1e9), "macs_pw": ("ms_per_gmac_pw", 1e9),
         "macs_dw": ("ms_per_gmac_dw", 1e9), "macs_fc": ("ms_per_gmac_fc", 1e9),
         "bytes_compute": ("ms_per_mb_compute", 1e6), "bytes_memory": ("ms_per_mb_memory", 1e6),
         "ops": ("us_per_op", 1e3)}
COMPUTE_KINDS = ("conv", "pw", "dw", "fc")
#: ridge strengths tried (on mean-scaled features); 0 = plain NNLS
LAMBDAS = (0.0, 1e-3, 1e-2, 0.1, 1.0, 10.0)
MIN_ARCHS = 5
#: which ops a net runs: every built op, or only the live ones (a compiler that prunes dead code)
GRAPHS = ("built", "live")
#: the live graph is chosen only when its leave-one-out error is this much lower than the built one's
#: (the nets as built are the default hypothesis; 10 noisy nets can favour "live" by chance). 0.3 was
#: chosen on the 21 NB201 devices outside HELP's six test devices (10 archs, 6 samples each: mean
#: Spearman 0.960 / 0.962 / 0.9625 / 0.962 for margins 0 / 0.1 / 0.3 / 0.5, measured before the prior
#: and the relative weights below were added), never on the test six.
LIVE_MARGIN = 0.3
HEADER = ["arch", "ms"]


# ---- features ------------------------------------------------------------------------------------
def layer_features(spec: LayerSpec) -> np.ndarray:
    """The FEATURES of one layer (sum over its primitives)."""
    v = np.zeros(len(FEATURES))
    for p in decompose(spec):
        if p.kind in COMPUTE_KINDS:
            v[FEATURES.index("macs_" + p.kind)] += p.macs
            v[FEATURES.index("bytes_compute")] += p.nbytes
        else:   # pool / eltwise: memory traffic only
            v[FEATURES.index("bytes_memory")] += p.nbytes
        v[FEATURES.index("ops")] += 1
    return v


class FeatureCache:
    """Per-arch features of one space, each distinct layer decomposed once."""

    def __init__(self, space: SearchSpace, graph: str = "built") -> None:
        if graph not in GRAPHS:
            raise ValueError(f"graph {graph!r}; valid: {', '.join(GRAPHS)}")
        self.space, self.graph = space, graph
        self._list = space.live_layers if graph == "live" else space.layers
        self._layers: dict[str, np.ndarray] = {}

    def layer(self, spec: LayerSpec) -> np.ndarray:
        v = self._layers.get(spec.key)
        if v is None:
            v = self._layers[spec.key] = layer_features(spec)
        return v

    def arch(self, arch: Arch) -> np.ndarray:
        return np.sum([self.layer(s) for s in self._list(arch)] or [np.zeros(len(FEATURES))], axis=0)

    def matrix(self, archs: Iterable[Arch]) -> np.ndarray:
        return np.array([self.arch(a) for a in archs]).reshape(-1, len(FEATURES))


# ---- the fit -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fit:
    """Fitted constants: ms = intercept_ms + features @ weights (weights in ms per feature unit)."""

    intercept_ms: float
    weights: tuple[float, ...]
    ridge: float
    graph: str                      # built | live (GRAPHS)
    archs: int
    fixed: tuple[str, ...]          # features constant over the nets: not identifiable, cost left to c0
    cv_error: float                 # leave-one-out sum|error| / sum(ms) (at the chosen ridge)
    cv_spearman: float | None       # Spearman of the leave-one-out predictions with the measurements
    train_error: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.intercept_ms + np.asarray(x, float) @ np.asarray(self.weights)

    def constants(self) -> dict[str, float]:
        out = {"intercept_ms": self.intercept_ms}
        for name, w in zip(FEATURES, self.weights):
            label, factor = UNITS[name]
            out[label] = w * factor
        return out


def _prior(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The two-constant model the ridge shrinks toward: one rate for all MACs and one per-op cost
    (NNLS of y on 1, total MACs, op count), as weights of FEATURES. Shrinking toward it instead of
    toward zero keeps a heavily regularised fit a MACs-and-ops ranking, never a near-constant one."""
    macs = [FEATURES.index("macs_" + k) for k in COMPUTE_KINDS]
    ops = FEATURES.index("ops")
    a = np.column_stack([np.ones(len(y)), x[:, macs].sum(axis=1), x[:, ops]])
    scale = np.where(np.abs(a).max(axis=0) > 0, np.abs(a).max(axis=0), 1.0)
    sol, _ = nnls(a / scale, y)
    sol = sol / scale
    w0 = np.zeros(x.shape[1])
    w0[macs], w0[ops] = sol[1], sol[2]
    return w0


def _solve(x: np.ndarray, y: np.ndarray, ridge: float, varying: np.ndarray) -> tuple[float, np.ndarray]:
    """NNLS on mean-scaled varying features with a ridge toward `_prior` (the intercept unpenalised,
    also >= 0)."""
    z = x[:, varying]
    scale = np.where(z.mean(axis=0) > 0, z.mean(axis=0), 1.0)
    z = z / scale
    n, k = z.shape
    prior = _prior(x, y)[varying] * scale if ridge > 0 else np.zeros(k)
    rel = (y.mean() / np.maximum(y, 1e-3 * y.mean()))[:, None]   # relative errors: multiplicative noise
    a = np.vstack([np.hstack([np.ones((n, 1)), z]) * rel, np.hstack([np.zeros((k, 1)), math.sqrt(ridge) * np.eye(k)])])
    b = np.concatenate([y * rel[:, 0], math.sqrt(ridge) * prior])
    sol, _ = nnls(a, b, maxiter=50 * (k + 1))
    w = np.zeros(x.shape[1])
    w[varying] = sol[1:] / scale
    return float(sol[0]), w


def _loo(x: np.ndarray, y: np.ndarray, ridge: float, varying: np.ndarray) -> np.ndarray:
    pred = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c, w = _solve(x[keep], y[keep], ridge, varying)
        pred[i] = c + x[i] @ w
    return pred


def _rel(pred: np.ndarray, y: np.ndarray) -> float:
    """Relative mean absolute error, sum|pred - y| / sum(y): robust to a few near-zero measurements."""
    return float(np.abs(pred - y).sum() / y.sum())


def fit_features(x: np.ndarray, y: np.ndarray, graph: str = "built") -> Fit:
    """Fit the constants to nets with features `x` (N x FEATURES) and measured ms `y` (N)."""
    from scipy.stats import spearmanr
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(y) < MIN_ARCHS:
        raise UsageError(f"calibration needs at least {MIN_ARCHS} measured archs, got {len(y)}")
    varying = x.max(axis=0) - x.min(axis=0) > 1e-9 * np.maximum(np.abs(x).max(axis=0), 1.0)
    scored = [(_rel(p, y), lam, p) for lam in LAMBDAS for p in [_loo(x, y, lam, varying)]]
    cv, ridge, loo_pred = min(scored, key=lambda s: (s[0], -s[1]))
    c, w = _solve(x, y, ridge, varying)
    train = _rel(c + x @ w, y)
    rho = float(spearmanr(loo_pred, y)[0]) if np.ptp(loo_pred) > 0 and np.ptp(y) > 0 else None
    fixed = tuple(f for f, v in zip(FEATURES, varying) if not v)
    return Fit(c, tuple(float(v) for v in w), ridge, graph, len(y), fixed, cv, rho, train)


def fit_best(xs: dict[str, np.ndarray], y: np.ndarray) -> Fit:
    """Fit on each graph's features (GRAPHS -> N x FEATURES); keep the live graph only when its
    leave-one-out error beats the built graph's by LIVE_MARGIN."""
    fits = {graph: fit_features(x, y, graph) for graph, x in xs.items()}
    built, live = fits.get("built"), fits.get("live")
    if built is None or live is None:
        return next(iter(fits.values()))
    return live if live.cv_error < (1.0 - LIVE_MARGIN) * built.cv_error else built


# ---- measurements file ---------------------------------------------------------------------------
def _space_of(block: str, not_this: str) -> str | None:
    """The first other shipped space (default options) that parses `block`, or None."""
    from search_spaces.catalog import SPACES, get_space
    for name in SPACES.names():
        if name == not_this:
            continue
        try:
            get_space(name).parse_any(block)
        except (ArchError, NasError, ValueError):
            continue
        return name
    return None


def read_measurements(path: str | Path, space: SearchSpace) -> list[tuple[Arch, float]]:
    """`arch,ms` CSV rows as (arch, ms); any bad line, duplicate arch or too few archs raises UsageError."""
    try:   # read row by row (a 121 MB file was read whole before its line 14 was refused); BOM accepted
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return _read_rows(path, csv.reader(fh), space)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read measurements file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except csv.Error as exc:   # a field over csv's limit (131072 characters): no arch is that long
        raise UsageError(f"measurements file {path}: not an 'arch,ms' CSV ({exc})") from None


#: the most measured archs a file may hold, and the latencies a measurement may have (ms)
MAX_MEASUREMENTS = 100_000
MS_RANGE = (1e-4, 1e6)


def _read_rows(path: str | Path, reader: Iterator[list[str]], space: SearchSpace) -> list[tuple[Arch, float]]:
    first = next(reader, None)
    if first is None or [c.strip() for c in first] != HEADER:
        got = ",".join(first) if first else "an empty file"
        raise UsageError(f"measurements file {path}: first line must be the header 'arch,ms', got {got!r:.80}")
    out: list[tuple[Arch, float]] = []
    seen: dict[Arch, int] = {}
    for line, row in enumerate(reader, start=2):
        if len(out) >= MAX_MEASUREMENTS:
            raise UsageError(f"measurements file {path} holds more than {MAX_MEASUREMENTS} measured archs; "
                             f"give at most {MAX_MEASUREMENTS}")
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise UsageError(f"measurements file {path} line {line}: expected 2 fields 'arch,ms', got {len(row)}: "
                             f"{','.join(row)!r:.100}")
        block, ms_text = row[0].strip(), row[1].strip()
        try:
            arch = space.parse_any(block)
        except ArchError as exc:
            other = _space_of(block, space.name)
            if other and not out:   # the first net already: the whole file is of another space
                raise UsageError(f"measurements file {path} holds {other} archs (line {line}: {block!r:.60}), "
                                 f"not {space.name} archs: give --space {other} or the file of {space.name} nets") \
                    from None
            hint = f" (it is a {other} arch)" if other else f": {exc}"
            raise UsageError(f"measurements file {path} line {line}: {block!r:.100} is no {space.name} arch{hint}") \
                from None
        try:
            ms = float(ms_text)
        except ValueError:
            ms = math.nan
        if not (math.isfinite(ms) and ms > 0):
            raise UsageError(f"measurements file {path} line {line}: latency {ms_text!r} is not a positive "
                             f"number of ms")
        if not MS_RANGE[0] <= ms <= MS_RANGE[1]:
            raise UsageError(f"measurements file {path} line {line}: latency {ms_text!r} ms is outside "
                             f"[{MS_RANGE[0]:g}, {MS_RANGE[1]:g}] ms; give milliseconds")
        if arch in seen:
            raise UsageError(f"measurements file {path} line {line}: arch {space.format(arch)!r:.100} is "
                             f"measured twice (also line {seen[arch]}); give each arch once")
        seen[arch] = line
        out.append((arch, ms))
    if len(out) < MIN_ARCHS:
        raise UsageError(f"measurements file {path} holds {len(out)} measured archs; calibration needs at least "
                         f"{MIN_ARCHS} (10 or more recommended)")
    if max(ms for _, ms in out) - min(ms for _, ms in out) <= 1e-9 * max(ms for _, ms in out):
        raise UsageError(f"measurements file {path}: all {len(out)} measured nets cost the same ({out[0][1]:g} ms): "
                         f"nothing to fit; measure nets of different sizes")
    return out


# ---- the table -----------------------------------------------------------------------------------
def calibrate(space: SearchSpace, measurements: Sequence[tuple[Arch, float]]) -> Fit:
    """Fit the model on both graphs (all built ops / live ops only) and keep the better one."""
    xs = {g: FeatureCache(space, g).matrix(a for a, _ in measurements) for g in GRAPHS}
    return fit_best(xs, np.array([ms for _, ms in measurements]))


def build_table(space: SearchSpace, fit: Fit, device: str, source: str = "") -> LatencyTable:
    """A normal per-layer LatencyTable priced by `fit` (its intercept is the per-call overhead)."""
    meta = {
        "device": device, "source": "fitted from end-to-end measurements",
        "runtime": "as measured by the user (whole nets)", "runtime_version": "n/a (fitted)",
        "provider": "n/a (fitted)", "threads": "n/a", "batch": 1, "statistic": "model prediction",
        "call_overhead_ms": fit.intercept_ms, "graph": fit.graph,
        "model": "t = c0 + sum over primitives of MACs/rate[kind] + bytes/BW + per-op cost "
                 "(ridge NNLS on per-arch features; latency/calibrate.py)",
        "features": list(FEATURES), "constants": fit.constants(), "fit": asdict(fit),
        "cv": {"method": "leave-one-out at the chosen ridge and graph", "error": fit.cv_error,
               "error_is": "sum|predicted - measured| / sum(measured)", "spearman": fit.cv_spearman},
        "measurements": source, "archs": fit.archs,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    table = LatencyTable(space.name, space.options(), meta)
    w = np.asarray(fit.weights)
    for spec in space.all_layers():
        table.add(spec.key, max(0.0, float(layer_features(spec) @ w)))
    return table


def check_measurements(space: SearchSpace, path: str | Path) -> list[tuple[Arch, float]]:
    """read_measurements, also refusing a space whose layers have no primitive decomposition."""
    rows = read_measurements(path, space)
    try:
        FeatureCache(space).arch(rows[0][0])
    except NasError as exc:
        raise UsageError(f"space {space.name} cannot be calibrated: {exc}") from None
    return rows
