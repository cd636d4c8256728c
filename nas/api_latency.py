"""The Python API of `nas latency ...`: profile, predict, show, validate, bundle, import.

Each function is what one subcommand calls (nas/cli_latency.py prints what it returns). Spaces are
given by name and options, as on the command line.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from nas.core.errors import UsageError
from nas.training.threads import set_torch_threads

if TYPE_CHECKING:
    from latency.quantize import Calibration
    from latency.table import LatencyTable
    from latency.validate import Validation


def _space(name: str, options: Mapping[str, Any] | None) -> Any:
    from search_spaces.catalog import get_space
    return get_space(name, **dict(options or {}))


def profile(space: str, out: str, space_options: Mapping[str, Any] | None = None, *, device: str | None = None,
            progress: bool = True, clock: str = "auto", calibration_nets: int = 10, dataset: str | None = None,
            int8_strict: bool = False, **settings: Any) -> "LatencyTable":
    """Time every distinct layer of a space with onnxruntime on this machine; `settings` are
    ProfileSettings fields (provider, threads, opt_level, batch, warmup, repeats). `clock`: wall,
    cpu (preemption-corrected thread CPU time) or auto (cpu with one thread, else wall).
    `calibration_nets` sampled nets are then timed with their layers and a correction of the
    net-level bias is fitted on them and stored (latency.net_calibration; 0: none). `precision`
    int8 (a setting) times every graph statically quantized, calibrated on `dataset` (`calibration`);
    Ops onnxruntime has no int8 kernel for run in float, recorded per layer in the table;
    `int8_strict`: refuse them instead."""
    from latency.net_calibration import profile_calibrated
    from latency.profile import ProfileSettings
    from nas.core.files import check_writable
    if out is not None:
        check_writable(out, "--out")
    if calibration_nets < 0 or calibration_nets in (1, 2):
        raise UsageError(f"--calibration-nets must be 0 (none) or at least 3, got {calibration_nets}")
    set_torch_threads(None)   # torch only builds and exports the layers; onnxruntime uses its own threads
    sp = _space(space, space_options)
    prof = ProfileSettings(**settings)
    quant = None
    if prof.precision == "int8":
        from latency.quantize import Quantizer
        quant = Quantizer(calibration(dataset, sp.input_shape), strict=int8_strict)
    elif dataset is not None or int8_strict:
        raise UsageError("--dataset and --int8-strict apply to --precision int8 only")
    return profile_calibrated(sp, out, prof, device=device, progress=progress, clock=clock, nets=calibration_nets,
                              quant=quant)


def calibration(dataset: str | None, input_shape: Sequence[int], images: int = 16) -> "Calibration":
    """Int8 calibration images for nets taking `input_shape` (C, H, W): `images` training images of
    `dataset` (a `nas.data` spec, or a .npy file of N x C x H x W normalised images) at the nets'
    resolution; None: the bundled digits. Images whose channels differ from the nets' are an error."""
    from latency.quantize import Calibration, digits_calibration, npy_calibration
    res = int(input_shape[-1])
    if dataset is None or dataset == "digits":
        calib = digits_calibration(res, images)
    elif str(dataset).endswith(".npy"):
        calib = npy_calibration(dataset)
    else:
        from nas.training.data import load_dataset
        x, _ = load_dataset(dataset, split="train", resolution=res, limit=images)
        calib = Calibration(dataset, x.numpy())
    calib.check_input(input_shape)
    return calib


def predict(space: str, arch: str, targets: Sequence[str], breakdown: bool = False,
            space_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Predicted latency of one arch on each target (and the per-layer entries with `breakdown`)."""
    from latency.targets import lut_model
    sp = _space(space, space_options)
    a = sp.parse_any(arch)
    rows: dict[str, Any] = {}
    for t in targets:
        model = lut_model(t, sp)
        rows[t] = {"latency_ms": model.predict(a)}
        if breakdown:
            rows[t]["layers"] = model.breakdown(a)
    return {"arch": sp.format(a), "targets": rows}


def predict_onnx(onnx: str, targets: Sequence[str], breakdown: bool = False,
                 input_shape: Sequence[int] | str | None = None, *, repeats: int = 50,
                 clock: str = "auto") -> dict[str, Any]:
    """Latency of any ONNX model: costed node by node on device-model targets (pixel1), timed with
    onnxruntime on `cpu` (this machine, one thread). `breakdown`: the per-node costs (device models)."""
    from latency.onnx_cost import DEVICE_MODELS
    from latency.onnx_load import parse_shape
    from latency.onnx_cost import predict_onnx as cost_onnx
    shape = parse_shape(input_shape) if isinstance(input_shape, str) else input_shape
    valid = sorted(DEVICE_MODELS) + ["cpu"]
    for t in targets:
        if t not in valid:
            raise UsageError(f"--onnx needs a device-model target or cpu, not {t!r}; valid: {', '.join(valid)}")
    rows: dict[str, Any] = {}
    for t in targets:
        if t == "cpu":
            from latency.onnx_time import time_onnx
            from latency.profile import cpu_model
            set_torch_threads(None)
            tm = time_onnx(onnx, shape, repeats=repeats, clock=clock)
            rows[t] = {"latency_ms": tm.latency_ms, "iqr_ms": tm.iqr_ms, "spread": tm.spread,
                       "input_shape": list(tm.input_shape), "clock": tm.clock, "load": tm.load, "note": tm.note,
                       "method": f"onnxruntime, {tm.threads} thread, {tm.clock} clock, median of {tm.repeats} runs, "
                                 f"IQR {tm.iqr_ms:.3f} ms ({100 * tm.spread:.0f}% of the median)",
                       "cpu": cpu_model()}
            continue
        cost = cost_onnx(onnx, t, shape)
        rows[t] = {"latency_ms": cost.latency_ms, "input_shape": list(cost.input_shape),
                   "nodes": len(cost.nodes), "method": f"{t} device model, per-node primitives"}
        if breakdown:
            rows[t]["breakdown"] = cost.breakdown()
    return {"onnx": str(onnx), "targets": rows}


def show_target(target: str, space: str | None = None) -> list[dict[str, Any]]:
    """A target's tables (one per space, or the one of `space`) with their measurement metadata."""
    from latency.targets import load_table, target_spaces
    spaces = [space] if space else target_spaces(target) if not target.endswith(".json") else []
    tables = [load_table(target, s) for s in spaces] if spaces else [load_table(target, "")]
    return [{"space": t.space, "entries": len(t.entries), "missing": _missing_layers(t), "metadata": t.metadata,
             "source": t.source} for t in tables]


def _missing_layers(table: "LatencyTable") -> int | None:
    """How many layers of the table's space it lacks (a half-profiled table); None when the space
    cannot be rebuilt from the table's options."""
    from nas.core.errors import NasError
    try:
        keys = {s.key for s in _space(table.space, table.space_options).all_layers()}
    except (NasError, TypeError, ValueError):
        return None
    return len(keys - set(table.entries))


def validate(space: str, table: str | None = None, target: str | None = None,
             space_options: Mapping[str, Any] | None = None, *, save_correction: str | None = None,
             fit_correction: bool = False, plot: str | None = None, dataset: str | None = None,
             **options: Any) -> "Validation":
    """Measure sampled whole nets against a table's predictions (latency.validate.validate options);
    `plot`: predicted vs measured as a PNG; `save_correction`: also write the table with a
    correction fitted on all archs."""
    from latency.table import LatencyTable
    from latency.targets import load_table
    from latency.validate_report import plot as plot_report
    from latency.validate import validate as run_validation
    from latency.validate import with_correction
    if save_correction and not fit_correction:
        raise UsageError("--save-correction needs --fit-correction")
    if (table is None) == (target is None):
        raise UsageError("give exactly one of --table FILE and --target NAME")
    from latency.targets import model_targets
    if target in model_targets():
        raise UsageError(f"--target {target} is a device model of the Google Pixel 1, not a table timed with "
                         f"onnxruntime: validate times nets on this machine, so it checks measured tables only "
                         f"(--table FILE or a cpu target)")
    if save_correction:
        from nas.core.files import check_writable
        check_writable(save_correction, "--save-correction")
    set_torch_threads(None)
    sp = _space(space, space_options)
    lut = LatencyTable.load(table) if table else load_table(str(target), sp, progress=bool(options.get("progress", True)))
    calib = None
    if dataset is not None:
        if lut.metadata.get("precision", "float32") != "int8":
            raise UsageError("--dataset applies to int8 tables only (their calibration images)")
        calib = calibration(dataset, sp.input_shape)
    result = run_validation(sp, lut, fit=fit_correction, calibration=calib, **options)
    if plot:
        result.report["plot"] = str(plot_report(result.report, plot))
    if save_correction and result.correction is not None:
        with_correction(lut, result.correction).save(save_correction)
        result.report["saved"] = save_correction
    return result


def bundle(space: str, out: str, space_options: Mapping[str, Any] | None = None, *, progress: bool = True,
           **settings: Any) -> dict[str, Any]:
    """Export every distinct layer of a space as ONNX + manifest + the standalone profiling script."""
    from latency.bundle import export_bundle
    from latency.profile import ProfileSettings
    from nas.core.files import check_writable
    from pathlib import Path
    check_writable(Path(out) / "manifest.json", "--out")   # before the export of every layer
    set_torch_threads(None)
    return export_bundle(_space(space, space_options), out, ProfileSettings(**settings), progress=progress)


def import_bundle(bundle_dir: str, out: str, results: str | None = None, device: str | None = None,
                  allow_missing: bool = False) -> tuple["LatencyTable", dict[str, Any]]:
    """Turn a bundle's results into a latency table written to `out` (checked against the space as
    defined now)."""
    from latency.bundle import import_results
    from nas.core.files import check_writable
    check_writable(out, "--out")
    table, rep = import_results(bundle_dir, results, device, allow_missing,
                                space_lookup=lambda name, options: _space(name, options))
    table.save(out)
    return table, rep


def calibrate(space: str, measurements: str, out: str, space_options: Mapping[str, Any] | None = None, *,
              device: str | None = None, basis: str | None = None) -> dict[str, Any]:
    """Fit a device model to whole-net latencies (CSV `arch,ms`) and write it as a latency table: the
    fixed blend of model families of latency/calibrate_select.py. `basis` ('all' or device names; nb201
    only): the shipped devices' latencies join the families (a whole-net table of every arch)."""
    from latency.calibrate import check_measurements
    from latency.calibrate_basis import basis_devices
    from latency.calibrate_select import calibrate_table
    from nas.core.files import check_writable
    sp = _space(space, space_options)
    devices = basis_devices(basis) if basis is not None else None   # bad input fails before anything is written
    rows = check_measurements(sp, measurements)
    check_writable(out, "--out")
    blend, table = calibrate_table(sp, rows, devices, device or f"calibrated from {measurements}", str(measurements))
    table.save(out)
    roof = blend.roofline
    info: dict[str, Any] = {"out": str(out), "space": sp.name, "entries": len(table.entries), "archs": len(rows),
                            "model": "blend", "families": blend.summary(), "graph": roof.graph,
                            "constants": roof.constants(), "ridge": roof.ridge, "fixed": list(roof.fixed),
                            "cv_error": roof.cv_error, "cv_spearman": roof.cv_spearman,
                            "train_error": roof.train_error}
    if devices is not None:
        fit = blend.fits[blend.families.index("basis")]
        info.update(basis=devices, basis_weights={c: w for c, w in zip(devices, fit.weights) if w > 0},
                    basis_intercept_ms=fit.intercept_ms)
    return info


def read_archs(space: Any, path: str) -> list[Any]:
    """One arch per line (block string, preset or JSON; blank lines and '#' comments skipped)."""
    from pathlib import Path
    from nas.core.errors import ArchError
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read archs file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    archs = []
    for n, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            archs.append(space.parse_any(text))
        except ArchError as exc:
            raise UsageError(f"archs file {path} line {n}: {text!r:.100} is no {space.name} arch: {exc}") from None
    if not archs:
        raise UsageError(f"archs file {path} holds no arch (one block string per line)")
    return archs


def predict_archs(space: str, archs: str, targets: Sequence[str],
                  space_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Bulk predictions: one object per arch of the file (and target) with `arch` and `latency_ms`."""
    from latency.targets import lut_model
    sp = _space(space, space_options)
    parsed = read_archs(sp, archs)
    rows: list[dict[str, Any]] = []
    for t in targets:
        ms = lut_model(t, sp).predict_many(parsed)
        rows += [{"arch": sp.format(a), "target": t, "latency_ms": float(v)} for a, v in zip(parsed, ms)]
    return rows
