"""In-context profiling and calibration: whole nets timed with the layers fix a table's net-level bias.

A layer timed alone is not a layer inside a net. Measured here (2-core AMD EPYC VM, onnxruntime
1.32, one thread, cpu clock, quiet): layers timed among other layers only read 5-15% faster than
the same layers timed among whole nets, and the mbconv nets ranked by such a table reached Spearman
0.46-0.93 against 0.92-0.98 for layers timed among nets; and nets still take 5-11% more than the
sum of their layers timed in the same run (mbconv, nasnet). So `profile_calibrated` times `nets`
sampled archs of the space in every group of layers (`latency.profile.profile_layers`, context),
then fits `latency.correction` on those nets against the table's own entries (the feature set,
"none" included, is picked by leave-one-out) and stores it in the table, whose `LUTModel` applies
it. `calibrate` does the same with a separate joint run (a table profiled without context nets).

The calibration archs come from their own seed (`CALIBRATION_SEED`), far from `nas latency
validate`'s default seed 0, so a later validation judges the table on nets it was not fitted on;
validate warns when the seeds coincide.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from latency.correction import LayerTimes, fit_correction, lut_ms
from nas.core.errors import NasError

if TYPE_CHECKING:
    from latency.profile import ProfileSettings
    from latency.quantize import Quantizer
    from latency.table import LatencyTable
    from nas.core.arch import Arch
    from nas.core.space import SearchSpace

log = logging.getLogger(__name__)

#: seed of the archs a table is calibrated on (validate samples with seed 0 unless told otherwise)
CALIBRATION_SEED = 1_000_003
#: nets timed by `nas latency profile` unless --calibration-nets says otherwise
DEFAULT_NETS = 10


def calibrate(space: "SearchSpace", table: "LatencyTable", settings: "ProfileSettings", clock: str,
              nets: int = DEFAULT_NETS, rounds: int = 10, seed: int = CALIBRATION_SEED,
              progress: bool = True, quant: "Quantizer | None" = None) -> "LatencyTable":
    """Time `nets` archs with their layers (int8 graphs with `quant`), fit the table's correction on
    them, store it (in place).

    With fewer than 3 distinct archs (a tiny space) nothing is fitted and the table is returned as is."""
    from latency.model import layer_list
    from latency.validate import measure, sample_archs
    archs = sample_archs(space, nets, seed)
    if len(archs) < 3:
        log.warning("space %s has fewer than 3 distinct archs: no calibration nets timed", space.name)
        return table
    t0 = time.perf_counter()
    meas = measure(space, archs, settings, joint=True, rounds=rounds, chunk=8, progress=progress, clock=clock,
                   desc="calibration nets (export + timing)", quant=quant,
                   layers_of=layer_list(space, table.metadata))
    assert meas.layers is not None and meas.overhead_ms is not None  # joint=True always returns them
    _fit_and_store(space, table, meas.layers, meas.overhead_ms, meas.net_ms, "profile calibration nets, joint layer times",
                   seed=seed, clock=clock, seconds=time.perf_counter() - t0, rounds=rounds)
    return table


def fit_from_table(space: "SearchSpace", table: "LatencyTable", archs: "list[Arch]", clock: str, seed: int,
                   seconds: float) -> "LatencyTable":
    """Fit and store the correction from the context nets' medians (`metadata["context_ms"]`) against
    the table's entries and call overhead: exactly what `LUTModel` will correct."""
    from latency.model import layer_list
    times = table.metadata["context_ms"]
    nets = np.array([float(np.median(times[a.key])) for a in archs])
    layers = [[(s, table.ms(s.key)) for s in layer_list(space, table.metadata)(a)] for a in archs]
    ovh = np.full(len(archs), float(table.metadata.get("call_overhead_ms", 0.0)))
    return _fit_and_store(space, table, layers, ovh, nets, "profile context nets, table entries",
                          seed=seed, clock=clock, seconds=seconds)


def _fit_and_store(space: "SearchSpace", table: "LatencyTable", layers: "list[LayerTimes]", ovh: np.ndarray,
                   nets: np.ndarray, note: str, *, seed: int, clock: str, seconds: float,
                   rounds: int | None = None) -> "LatencyTable":
    """Fit the correction of `nets` (measured ms) against their `layers` + `ovh`, record how it was
    made (seed, clock, seconds; rounds of a separate joint run) and its training agreement, store it."""
    from latency.validate import agreement
    # int8: the simplest feature set within one standard error of the best held-out MAPE (correction.RULES)
    corr = fit_correction(layers, ovh, nets, note=note,
                          rule="one-se" if table.metadata.get("precision") == "int8" else "best")
    lut = np.array([lut_ms(ls, o) for ls, o in zip(layers, ovh)])
    fitted = np.array([corr.predict(ls, o) for ls, o in zip(layers, ovh)])
    corr.fit.update({
        "source": "profile", "space": space.name, "samples_seed": seed, "nets": len(nets),
        **({"rounds": rounds} if rounds is not None else {}), "clock": clock,
        "seconds": round(seconds, 1), "net_vs_layers_bias_pct": round(float(np.mean(nets / lut - 1.0) * 100), 2),
        "lut_train": {k: round(v, 4) for k, v in agreement(lut, nets).items()},
        "corrected_train": {k: round(v, 4) for k, v in agreement(fitted, nets).items()}})
    table.metadata["correction"] = corr.to_dict()
    log.info("calibrated %s on %d nets: nets are %+.1f%% against the sum of their layers; kept %s",
             space.name, len(nets), corr.fit["net_vs_layers_bias_pct"], corr.fit.get("selected"))
    return table


def profile_calibrated(space: "SearchSpace", out: "str | Path | None", settings: "ProfileSettings",
                       device: str | None = None, progress: bool = True, clock: str = "auto",
                       nets: int = DEFAULT_NETS, seed: int = CALIBRATION_SEED,
                       quant: "Quantizer | None" = None) -> "LatencyTable":
    """Profile (or resume) the table of `space` with `nets` calibration nets timed in every group of
    layers, then fit and store the correction (`nets` 0: a plain profile); `quant`: int8 graphs."""
    from latency.profile import profile_space
    from latency.table import LatencyTable
    from latency.validate import sample_archs
    archs = sample_archs(space, nets, seed) if nets else []
    if 0 < len(archs) < 3:
        log.warning("space %s has fewer than 3 distinct archs: no calibration nets", space.name)
        archs = []
    before = -1
    if out is not None and Path(out).exists():
        try:
            before = len(LatencyTable.load(out).entries)
        except NasError:
            before = -1
    context = [(a.key, space.build(a), space.input_shape) for a in archs]
    t0 = time.perf_counter()
    table = profile_space(space, out, settings, device=device, progress=progress, clock=clock, context=context,
                          quant=quant)
    if not archs or ("correction" in table.metadata and len(table.entries) == before):
        return table
    times = table.metadata.get("context_ms", {})
    used = str(table.metadata.get("clock", "wall"))
    if all(a.key in times for a in archs):
        fit_from_table(space, table, archs, used, seed, time.perf_counter() - t0)
    else:   # a resumed table whose groups were timed without these nets: time them now, jointly
        calibrate(space, table, settings, used, len(archs), seed=seed, progress=progress, quant=quant)
    if out is not None:
        table.save(out)
    return table


def summary(table: "LatencyTable") -> str | None:
    """One line on the table's stored correction, or None when it has none."""
    corr = table.metadata.get("correction")
    if not isinstance(corr, dict):
        return None
    fit = corr.get("fit") or {}
    if fit.get("source") != "profile":
        return f"correction: {fit.get('selected', '?')} (fitted by validate on {fit.get('n', '?')} nets)"
    cv = (fit.get("cv_mape_pct") or {})
    return (f"calibration: {fit.get('nets')} nets (seed {fit.get('samples_seed')}) are "
            f"{fit.get('net_vs_layers_bias_pct', 0.0):+.1f}% against the sum of their layers; correction "
            f"'{fit.get('selected')}' (leave-one-out MAPE {cv.get('none', float('nan')):.1f}% -> "
            f"{cv.get(str(fit.get('selected')), float('nan')):.1f}%), {fit.get('seconds')} s")
