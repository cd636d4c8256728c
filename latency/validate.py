"""Does the LUT predict whole-network latency? Measure sampled nets end to end and compare.

Why "joint": on a shared machine the speed drifts by 10-25% over tens of seconds, and the drift is
common-mode. Timing layers at one moment and nets at another mixes that drift into the error. In
joint mode each group (`chunk`) of sampled nets is timed round-robin together with every layer
those nets contain and with the empty-call graph (`time_interleaved`), so drift hits layers and
nets alike; each net is predicted from the layer times of its own group. That measures the LUT
method itself. The table's own predictions (profiled at another time, maybe on another machine;
with the correction it stores, fitted on its calibration nets when it was profiled) are compared
with the same measured nets, and the "drift" line says how much the same layers moved since.

Int8 tables: every net is timed in one group with all its layers (not groups of 8), in 25 rounds, each
time the median of its round medians (`latency.int8_timing`: groups timed one after the other drifted
25-35% apart, so nets of different groups were not comparable and a stored table could not rank them).

Clock: `wall` (what a user waits for) or `cpu` (this thread's CPU time, one intra-op thread only;
what `auto`, the default, picks with one thread). When other processes compete for the cores, a 25 ms net is descheduled far more
often than a 0.5 ms layer, whose median escapes it: wall-clock nets then look slower than the sum
of their layers (seen here: 26 ms wall vs 10 ms CPU for one net at load 7 on 2 cores, while its
layers summed to 9.8 ms wall). CPU time is immune to that; use it on shared machines.

Metrics: Spearman and Kendall rank correlation, RMSE (ms), MAPE (%), the share of nets predicted
within +-5% and +-10%, and the mean signed relative error (bias).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike

from latency.clocks import CLOCK_NAMES as CLOCKS
from latency.contention import NOISY_SPREAD, choose_clock, current_load, halves, spread
from latency.correction import Correction, LayerTimes, fit_correction, lut_ms, table_correction
from latency.profile import ProfileSettings, cpu_model, stats, time_interleaved
from latency.table import LatencyTable
from nas.core.arch import Arch
from nas.core.errors import LatencyError, UsageError
from nas.core.layer import LayerSpec
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    from latency.quantize import Calibration, Quantizer

log = logging.getLogger(__name__)
METRICS = ("n", "spearman", "kendall", "rmse_ms", "mape_pct", "within_5_pct", "within_10_pct", "bias_pct")


def agreement(predicted: ArrayLike, measured: ArrayLike) -> dict[str, float]:
    """Agreement between predicted and measured latencies (ms); shares and errors in percent."""
    from scipy.stats import kendalltau, spearmanr
    p, m = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != m.shape or p.ndim != 1 or len(p) == 0:
        raise LatencyError(f"agreement needs two equal-length non-empty vectors, got shapes {p.shape} and {m.shape}")
    if not np.all(m > 0):
        raise LatencyError("agreement: measured latencies must be positive")
    rel = (p - m) / m
    ranked = len(p) >= 2 and np.ptp(p) > 0 and np.ptp(m) > 0
    return {"n": int(len(p)),
            "spearman": float(spearmanr(p, m).statistic) if ranked else float("nan"),
            "kendall": float(kendalltau(p, m).statistic) if ranked else float("nan"),
            "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
            "mape_pct": float(np.mean(np.abs(rel)) * 100),
            "within_5_pct": float(np.mean(np.abs(rel) <= 0.05) * 100),
            "within_10_pct": float(np.mean(np.abs(rel) <= 0.10) * 100),
            "bias_pct": float(np.mean(rel) * 100)}


def settings_of(table: LatencyTable) -> ProfileSettings:
    """The measurement settings recorded in an onnxruntime table (what validation must reuse)."""
    m = table.metadata
    if m.get("runtime") != "onnxruntime":
        raise LatencyError(f"latency table {table.source} was not measured with onnxruntime (runtime "
                           f"{m.get('runtime')!r}, source {m.get('source')!r}); validate times nets with "
                           f"onnxruntime on this machine, so it can only check onnxruntime tables")
    m = {"precision": "float32", **m}   # tables from before int8 profiling are float
    missing = [f.name for f in fields(ProfileSettings) if f.name not in m]
    if missing:
        raise LatencyError(f"latency table {table.source} lacks the measurement settings {missing} in its metadata")
    return ProfileSettings(**{f.name: m[f.name] for f in fields(ProfileSettings)})


def check_provider(provider: str) -> None:
    """Fail before any export when this onnxruntime lacks the table's execution provider."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    if provider not in available:
        raise UsageError(f"the table was measured with execution provider {provider!r}, which this onnxruntime "
                         f"{ort.__version__} does not have; available: {', '.join(available)}")


def runtime_warnings(table: LatencyTable) -> list[str]:
    """Reasons why this machine's measurements may not match the table's (not errors)."""
    import onnxruntime as ort
    m, out = table.metadata, []
    if m.get("runtime_version") != ort.__version__:
        out.append(f"table {table.source} was measured with onnxruntime {m.get('runtime_version')}, "
                   f"this machine has {ort.__version__}")
    if m.get("cpu") and m.get("cpu") != cpu_model():
        out.append(f"table {table.source} was measured on {m.get('cpu')!r}, this machine is {cpu_model()!r}")
    if int(m.get("threads", 1)) > (os.cpu_count() or 1):
        out.append(f"table uses {m.get('threads')} threads but this machine has {os.cpu_count()} cores")
    return out


def sample_archs(space: SearchSpace, n: int, seed: int) -> list[Arch]:
    """`n` distinct archs (fewer only if the space is that small)."""
    if n < 1:
        raise UsageError(f"--samples must be at least 1, got {n}")
    rng, seen = np.random.default_rng(seed), dict[str, Arch]()
    for _ in range(50 * n):
        a = space.sample(rng)
        seen.setdefault(a.key, a)
        if len(seen) == n:
            break
    if len(seen) < n:
        log.warning("space %s gave only %d distinct archs of %d asked", space.name, len(seen), n)
    return list(seen.values())


@dataclass
class Measured:
    net_ms: np.ndarray                          # median per net
    net_iqr_ms: np.ndarray
    layers: list[list[tuple[LayerSpec, float]]] | None   # joint: per net, its layers' ms from its group
    overhead_ms: np.ndarray | None              # joint: empty-call time of each net's group
    seconds: float
    groups: int
    net_halves: np.ndarray | None = None        # per net: medians of the first and second half of its rounds
    switches: list[dict[str, Any]] | None = None  # cpu clock: per group, the preemption correction made
    raw_net_ms: np.ndarray | None = None        # cpu clock: net medians before that correction
    raw_joint_ms: np.ndarray | None = None      # cpu clock: joint LUT predictions before it




def check_clock(clock: str, settings: ProfileSettings) -> None:
    if clock not in CLOCKS:
        raise UsageError(f"unknown clock {clock!r}; valid: {', '.join(CLOCKS)}")
    if clock == "cpu" and settings.threads != 1:
        raise UsageError(f"--clock cpu times the calling thread only, so it needs threads=1; the table uses "
                         f"threads={settings.threads} (use --clock wall on a quiet machine)")


def measure(space: SearchSpace, archs: Sequence[Arch], settings: ProfileSettings, joint: bool = True,
            rounds: int = 10, chunk: int = 8, progress: bool = True, clock: str = "wall",
            desc: str = "validate (export + timing)", quant: "Quantizer | None" = None,
            layers_of: "Callable[[Arch], list[LayerSpec]] | None" = None, round_medians: bool = False) -> Measured:
    """Time whole nets (and, if `joint`, their layers and the empty call, interleaved with them);
    with `quant`, every net and layer as its int8 graph (the empty call stays float, as in profiling).
    `layers_of`: the layers of an arch the table prices (`latency.model.layer_list`; default `space.layers`).
    `round_medians`: each session's time is the median of its per-round medians
    (`latency.int8_timing.round_median`), not the median of all its runs."""
    import torch
    from tqdm import tqdm

    from latency.int8_context import LayerContext, feed as int8_feed
    from latency.onnx_io import export_onnx, session
    from latency.profile import quantized
    from nas.core.ops import build_layer
    check_clock(clock, settings)
    where = LayerContext.of(space)
    if rounds < 1 or chunk < 0:
        raise UsageError(f"--rounds must be >= 1 and --chunk >= 0, got {rounds} and {chunk}")
    chunk = chunk or len(archs)
    rounds = min(rounds, settings.repeats)
    layers_of = layers_of or space.layers
    n_groups = -(-len(archs) // chunk)
    net_ms, net_iqr = np.zeros(len(archs)), np.zeros(len(archs))
    layers: list[list[tuple[LayerSpec, float]]] = [[] for _ in archs]
    overhead = np.zeros(len(archs))
    net_halves = np.zeros((len(archs), 2))
    switch_groups: list[dict[str, Any]] = []
    raw_net, raw_joint = np.full(len(archs), np.nan), np.full(len(archs), np.nan)
    rng = np.random.default_rng(0)

    def feed(shape: Sequence[int]) -> np.ndarray:
        return rng.standard_normal((settings.batch, *shape)).astype(np.float32)

    def sess(path: Path) -> Any:
        return session(path, settings.provider, settings.threads, settings.opt_level)

    t0 = time.perf_counter()
    bar = tqdm(total=len(archs) + n_groups * rounds, desc=desc, unit="step",
               disable=not progress)
    with tempfile.TemporaryDirectory() as tmp, bar:
        files: dict[str, Path] = {}

        def export(name: str, module: Any, shape: Sequence[int], spec: LayerSpec | None = None) -> Path:
            if name not in files:
                path = export_onnx(module, torch.randn(settings.batch, *shape), Path(tmp) / f"{len(files)}.onnx")
                files[name] = path if name == "__overhead__" else quantized(path, shape, quant, name, {})
                if quant is not None and spec is not None:   # a layer: its in-net int8 graph, as profiled
                    files[name] = where.graph(files[name], spec)
            return files[name]

        for g in range(n_groups):
            idx = list(range(g * chunk, min(len(archs), (g + 1) * chunk)))
            nets = []
            for i in idx:
                nets.append(export(f"net{i}", space.build(archs[i]), space.input_shape))
                bar.update(1)
            specs = {s.key: s for i in idx for s in layers_of(archs[i])} if joint else {}
            paths = [export("__overhead__", torch.nn.AvgPool2d(1), (8, 1, 1))] if joint else []
            paths += [export(k, build_layer(s), s.input_shape, s) for k, s in specs.items()]
            shapes = ([(8, 1, 1)] if joint else []) + [s.input_shape for s in specs.values()]
            sessions = [sess(p) for p in paths + nets]
            switch_info: dict[str, Any] = {}
            inputs = [feed(sh) for sh in shapes + [space.input_shape] * len(nets)]
            if quant is not None:   # in-net layer graphs take uint8 (NHWC)
                inputs[len(paths) - len(specs):len(paths)] = [int8_feed(sessions[k], rng) for k in
                                                              range(len(paths) - len(specs), len(paths))]
            times = time_interleaved(sessions, inputs, settings.warmup, settings.repeats, rounds, progress=bar,
                                     clock=clock, switches=switch_info)
            del sessions
            if switch_info:
                raw = switch_info.pop("raw_median_ms")
                switch_groups.append(switch_info)
                raw_local = {k: max(0.0, raw[1 + m] - raw[0]) for m, k in enumerate(specs)}
                for j, i in enumerate(idx):
                    raw_net[i] = raw[len(paths) + j]
                    if joint:
                        raw_joint[i] = raw[0] + sum(raw_local[s.key] for s in layers_of(archs[i]))
            meds = [stats(t) for t in times]
            if round_medians:
                from latency.int8_timing import round_median
                meds = [(round_median(t, rounds), iqr) for t, (_, iqr) in zip(times, meds)]
            for j, i in enumerate(idx):
                net_ms[i], net_iqr[i] = meds[len(paths) + j]
                net_halves[i] = halves(times[len(paths) + j])
            if joint:
                ovh = meds[0][0]
                local = {k: max(0.0, meds[1 + j][0] - ovh) for j, k in enumerate(specs)}
                for i in idx:
                    overhead[i] = ovh
                    layers[i] = [(s, local[s.key]) for s in layers_of(archs[i])]
    return Measured(net_ms, net_iqr, layers if joint else None, overhead if joint else None,
                    time.perf_counter() - t0, n_groups, net_halves, switch_groups or None,
                    raw_net if switch_groups else None, raw_joint if switch_groups and joint else None)


@dataclass
class Validation:
    report: dict[str, Any]                  # JSON-able: settings, metrics, per-arch rows
    correction: Correction | None           # fitted on all samples (if asked): what gets saved


def validate(space: SearchSpace, table: LatencyTable, samples: int = 20, seed: int = 0, joint: bool = True,
             rounds: int | None = None, chunk: int | None = None, fit: bool = False, holdout: float = 0.5,
             progress: bool = True, clock: str = "auto", calibration: "Calibration | None" = None) -> Validation:
    """Time `samples` nets of `space` (and their layers: `joint`) and compare with `table`. An int8
    table's nets and layers are quantized as it was (`latency.quantize.quantizer_of`; `calibration`:
    the images, needed when the table was not calibrated on the bundled digits). `rounds` / `chunk`
    None: 10 rounds in groups of 8 nets (float), 25 rounds with all nets in one group and each time
    the median of its round medians (int8: `latency.int8_timing`)."""
    from latency.int8_timing import check_rounds_chunk, validate_grouping
    from latency.model import LUTModel, layer_list
    from latency.quantize import quantizer_of
    table.check_space(space.name, space.options())
    check_rounds_chunk(rounds, chunk)
    settings = settings_of(table)
    if calibration is not None:
        calibration.check_input(space.input_shape)
    quant = quantizer_of(table.metadata, calibration, space.input_shape[-1])
    if fit and not 0.0 < holdout < 1.0:
        raise UsageError(f"--holdout must be a fraction in (0, 1), got {holdout}")
    if fit and samples - max(1, int(round(samples * holdout))) < 3:
        raise UsageError(f"--fit-correction needs at least 3 archs to fit on: --samples {samples} with --holdout "
                         f"{holdout} leaves {samples - max(1, int(round(samples * holdout)))}")
    check_provider(settings.provider)
    if clock not in (*CLOCKS, "auto"):
        raise UsageError(f"unknown clock {clock!r}; valid: {', '.join([*CLOCKS, 'auto'])}")
    load = current_load(settings.threads)
    clock, load_note = choose_clock(clock, load, settings.threads)
    check_clock(clock, settings)
    warnings = runtime_warnings(table) + ([load_note] if load_note else [])
    if clock != table.metadata.get("clock", "wall"):
        warnings.append(f"nets are timed with the {clock} clock, the table with {table.metadata.get('clock', 'wall')}: "
                        f"the table LUT rows compare different clocks (the joint rows do not)")
    for w in warnings:
        log.warning(w)
    archs = sample_archs(space, samples, seed)
    plain = LUTModel(space, table, correct=False)
    old = table_correction(table.metadata, table.source)
    if old is not None and old.fit.get("samples_seed") == seed and old.fit.get("space") == space.name:
        warnings.append(f"the table's correction was fitted on archs sampled with seed {seed}, this validation's "
                        f"seed: the corrected rows are not held out; use another --seed")
        log.warning(warnings[-1])
    layers_of = layer_list(space, table.metadata)
    distinct = len({s.key for a in archs for s in layers_of(a)}) if joint else 0
    rounds, chunk = validate_grouping(quant is not None, len(archs), distinct, rounds, chunk, settings.repeats)
    meas = measure(space, archs, settings, joint, rounds, chunk, progress, clock, quant=quant, layers_of=layers_of,
                   round_medians=quant is not None)
    y = meas.net_ms
    noise = spread(meas.net_ms, meas.net_iqr_ms)
    if noise > NOISY_SPREAD:
        msg = (f"noisy timings: the repeats of a net spread {100 * noise:.0f}% (median IQR / median)")
        warnings.append(msg + ("; rerun with --clock cpu" if clock == "wall" and settings.threads == 1 else ""))
        log.warning(warnings[-1])
    table_layers: list[LayerTimes] = [[(s, table.ms(s.key)) for s in layers_of(a)] for a in archs]
    pred: dict[str, np.ndarray] = {"table_lut": plain.predict_many(archs)}
    if old is not None:
        pred["table_corrected"] = np.array([old.predict(ls, plain.overhead) for ls in table_layers])
    if meas.layers is not None and meas.overhead_ms is not None:
        pred["joint_lut"] = np.array([lut_ms(ls, o) for ls, o in zip(meas.layers, meas.overhead_ms)])
        if old is not None:   # the stored correction on layer times of this run: its quality without drift
            pred["joint_stored"] = np.array([old.predict(ls, o) for ls, o in zip(meas.layers, meas.overhead_ms)])
    report: dict[str, Any] = {
        "space": space.name, "space_options": space.options(), "table": table.source,
        "settings": asdict(settings), "clock": clock, "samples": len(archs), "seed": seed, "joint": joint, "rounds": rounds,
        "chunk": chunk, "groups": meas.groups,
        "statistic": "median of round medians" if quant is not None else "median", "seconds": round(meas.seconds, 1), "warnings": warnings,
        "metrics": {name: agreement(p, y) for name, p in pred.items()},
        "load": None if load is None else {"load1": load.load1, "cores": load.cores, "busy": load.busy},
        "repeat_spread_pct": round(100 * noise, 2)}
    if "joint_lut" in pred:   # the machine's speed now against when the table was profiled (common mode)
        report["drift_pct"] = round(float(np.mean(pred["joint_lut"] / pred["table_lut"] - 1.0) * 100), 2)
    if old is not None:
        report["stored_correction"] = {k: old.fit.get(k) for k in ("source", "selected", "nets", "n", "samples_seed",
                                                                     "net_vs_layers_bias_pct", "date")}
    if meas.switches:   # cpu clock: the cache-refill cost of preemption taken out of every run
        report["preemption"] = meas.switches
        if meas.raw_net_ms is not None:   # the same rows without that correction, for comparison
            raw_pred = {"table_lut": pred["table_lut"]}
            if meas.raw_joint_ms is not None:
                raw_pred["joint_lut"] = meas.raw_joint_ms
            report["uncorrected"] = {k: agreement(v, meas.raw_net_ms) for k, v in raw_pred.items()}
    if meas.net_halves is not None and rounds >= 2:   # the measurement against itself: the ceiling
        report["repeatability"] = agreement(meas.net_halves[:, 1], meas.net_halves[:, 0])
    correction = None
    if fit:
        src_layers = meas.layers if meas.layers is not None else table_layers
        src_ovh = meas.overhead_ms if meas.overhead_ms is not None else np.full(len(archs), plain.overhead)
        src = "joint" if meas.layers is not None else "table"
        perm = np.random.default_rng(seed).permutation(len(archs))
        n_test = max(1, int(round(len(archs) * holdout)))
        test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        part = fit_correction([src_layers[i] for i in train], src_ovh[train], y[train], note=f"{src} layer times")
        after = np.array([part.predict(src_layers[i], src_ovh[i]) for i in test])
        held: dict[str, Any] = {"n_fit": len(train), "n_test": len(test), "source": src,
                                "selected": part.fit["selected"],
                                f"{src}_lut": agreement(pred[f"{src}_lut"][test], y[test]),
                                f"{src}_corrected": agreement(after, y[test])}
        if src == "joint":   # the same correction applied to the table's entries (drift included)
            held["table_lut"] = agreement(pred["table_lut"][test], y[test])
            held["table_corrected"] = agreement(
                np.array([part.predict(table_layers[i], plain.overhead) for i in test]), y[test])
        report["holdout"] = held
        report["test_index"] = test.tolist()
        pred[f"{src}_corrected_holdout"] = np.full(len(archs), np.nan)
        pred[f"{src}_corrected_holdout"][test] = after
        correction = fit_correction(src_layers, src_ovh, y, note=f"{src} layer times")
        correction.fit.update({"holdout": held, "space": space.name, "samples_seed": seed})
        report["correction"] = correction.to_dict()
    report["archs"] = [{"arch": space.format(a), "key": a.key, "measured_ms": float(y[i]),
                        "measured_iqr_ms": float(meas.net_iqr_ms[i]),
                        **{f"{k}_ms": (None if np.isnan(v[i]) else float(v[i])) for k, v in pred.items()}}
                       for i, a in enumerate(archs)]
    return Validation(report, correction)


def with_correction(table: LatencyTable, correction: Correction) -> LatencyTable:
    """A copy of `table` whose metadata carries `correction` (LUTModel applies it when loading)."""
    return LatencyTable(table.space, dict(table.space_options), {**table.metadata, "correction": correction.to_dict()},
                        dict(table.entries), table.source)
