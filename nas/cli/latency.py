"""`nas latency ...`: profile a table on this device, predict an arch's latency, show a target,
validate a table, bundle layers for a device without nas, import its results.

Thin: each command calls one function of nas/api_latency.py and prints what it returns.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from nas.cli.args import add_space_args, emit, space_options


def _profile_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"provider": args.provider, "threads": args.threads, "opt_level": args.opt_level, "batch": args.batch,
            "warmup": args.warmup, "repeats": args.repeats,
            **({"precision": args.precision} if getattr(args, "precision", None) else {})}


def cmd_profile(args: argparse.Namespace) -> int:
    from nas.api_latency import profile
    from latency.net_calibration import summary
    table = profile(args.space, args.out, space_options(args.space_option), device=args.device,
                    progress=not args.quiet, clock=args.clock, calibration_nets=args.calibration_nets,
                    dataset=args.dataset, int8_strict=args.int8_strict, **_profile_settings(args))
    m, calib = table.metadata, summary(table)
    emit(args, {"out": args.out, "entries": len(table.entries), **m},
         f"wrote {args.out}: {len(table.entries)} layers of {table.space} on {m['device']} ({m['cpu']}), "
         f"{m.get('precision', 'float32')}, {m['provider']} threads={m['threads']}, {m.get('clock', 'wall')} clock, "
         f"{m['profile_seconds']:.1f} s"
         + (f"\nint8 {m['quantization']['quant_format']}, weights {m['quantization']['weights']}, calibrated on "
            f"{m['quantization']['calibration']['dataset']}" if "quantization" in m else "")
         + (f"\n{len(m['float_ops'])} layers kept ops in float: "
            f"{', '.join(sorted({o for v in m['float_ops'].values() for o in v}))}" if m.get("float_ops") else "")
         + (f"\n{calib}" if calib else "")
         + (f"\nnote: the machine was busy while profiling ({m.get('load_at_end') or m.get('load_at_start')}): its "
            f"layers may read slow (+21% seen); profile again on a quiet machine (cached cpu tables are checked "
            f"against a quiet re-timing automatically; this file is not)"
            if m.get("busy_at_start") or m.get("busy_at_end") else ""))
    return 0


def _predict_onnx(args: argparse.Namespace) -> int:
    from nas.api_latency import predict_onnx
    out = predict_onnx(args.onnx, args.target, args.breakdown, args.input_shape, clock=args.clock)
    text = []
    for t, r in out["targets"].items():
        text.append(f"{t}: {r['latency_ms']:.3f} ms ({r['method']}, input {'x'.join(map(str, r['input_shape']))})")
        if r.get("note"):
            text.append(f"  note: {r['note']}")
        for row in r.get("breakdown", []):
            text.append(f"  {row['ms']:8.4f}  {row['op']:<20} {row['node']}  [{' '.join(row['primitives'])}]")
    emit(args, out, "\n".join(text))
    return 0


def _predict_archs(args: argparse.Namespace) -> int:
    from nas.api_latency import predict_archs
    rows = predict_archs(args.space, args.archs, args.target, space_options(args.space_option))
    emit(args, rows, "\n".join(f"{r['latency_ms']:10.4f} ms  {r['target']}  {r['arch']}" for r in rows))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from nas.api_latency import calibrate
    r = calibrate(args.space, args.measurements, args.out, space_options(args.space_option), device=args.device,
                  basis=args.basis)
    fams = ", ".join(f"{k} {100 * v['cv_error']:.1f}% (weight {v['weight']:.2f})" for k, v in r["families"].items())
    what = "predicted archs" if "basis" in r else f"layers of {r['space']}"
    emit(args, r, f"wrote {r['out']}: {r['entries']} {what}, priced by a blend of model families fitted on "
                  f"{r['archs']} measured nets and weighted by their leave-one-out error: {fams}\n"
                  f"use it with --target {r['out']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from nas.api_latency import predict
    from nas.core.errors import UsageError
    if args.onnx:
        if args.arch or args.space_option:
            raise UsageError("give either --onnx MODEL.onnx or --space/--arch, not both")
        return _predict_onnx(args)
    if args.input_shape:
        raise UsageError("--input-shape only applies with --onnx")
    if args.archs:
        if args.arch or args.breakdown:
            raise UsageError("--archs FILE predicts many archs: give it without --arch and --breakdown")
        return _predict_archs(args)
    if not args.arch:
        raise UsageError("give --arch or --archs FILE (with --space), or --onnx MODEL.onnx")
    out = predict(args.space, args.arch, args.target, args.breakdown, space_options(args.space_option))
    text = []
    for t, r in out["targets"].items():
        text.append(f"{t}: {r['latency_ms']:.3f} ms")
        for key, ms in r.get("layers", []):
            text.append(f"  {ms:8.3f}  {key}")
    emit(args, out, "\n".join(text))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from nas.api_latency import show_target
    out = show_target(args.target, args.space)
    text = []
    for info in out:
        missing = info.get("missing")
        state = (f" - INCOMPLETE: {missing} of {info['entries'] + missing} layers missing (run the same "
                 f"'nas latency profile' again to finish it)" if missing else "")
        text.append(f"{args.target} / {info['space']}: {info['entries']} layers ({info['source']}){state}")
        text += [f"  {k}: {v}" for k, v in info["metadata"].items() if not isinstance(v, (dict, list))]
    emit(args, out, "\n".join(text))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from latency.validate_report import format_report
    from nas.api_latency import validate
    result = validate(args.space, args.table, args.target, space_options(args.space_option),
                      save_correction=args.save_correction, fit_correction=args.fit_correction, plot=args.plot,
                      samples=args.samples, seed=args.seed, joint=args.joint, rounds=args.rounds, chunk=args.chunk,
                      holdout=args.holdout, progress=not args.quiet, clock=args.clock, dataset=args.dataset)
    r = result.report
    text = format_report(r)
    if "plot" in r:
        text += f"\nplot: {r['plot']}"
    if "saved" in r:
        text += (f"\nwrote {r['saved']}: the table with a correction fitted on all {r['samples']} archs "
                 f"(LUTModel applies it when loading)")
    if args.json:
        for w in r.get("warnings", []):
            print(f"nas: warning: {w}", file=sys.stderr)
    emit(args, r, text)
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from nas.api_latency import bundle
    m = bundle(args.space, args.out, space_options(args.space_option), progress=not args.quiet,
               **_profile_settings(args))
    emit(args, {k: v for k, v in m.items() if k != "layers"} | {"out": args.out, "layers": len(m["layers"])},
         f"wrote {args.out}: {len(m['layers']) - 1} layers of {m['space']} + the empty-call graph as ONNX, "
         f"manifest.json and profile_onnx.py\non the device (needs only onnxruntime + numpy): "
         f"python profile_onnx.py {args.out} [--threads N --rounds 5 --timeout-s 60]\n"
         f"then here: nas latency import {args.out} --out TABLE.json")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from nas.api_latency import import_bundle
    table, rep = import_bundle(args.bundle, args.out, args.results, args.device, args.allow_missing)
    m = table.metadata
    text = [f"wrote {args.out}: {len(table.entries)} layers of {table.space} on {m['device']} ({m['cpu']}), "
            f"onnxruntime {m['runtime_version']} {m['provider']} threads={m['threads']}, {m['sessions']} run(s)"]
    if rep["missing"]:
        text.append(f"missing {len(rep['missing'])} layers:")
        text += [f"  {k}: {rep['failed'].get(k, 'not measured')}" for k in rep["missing"]]
    if rep["short"]:
        text.append(f"{len(rep['short'])} layers have fewer timed runs than asked (unfinished rounds)")
    for w in rep["warnings"]:
        print(f"nas: warning: {w}", file=sys.stderr)
    emit(args, {"out": args.out, "entries": len(table.entries), **rep, "metadata": m}, "\n".join(text))
    return 0


def add_latency_parser(sub: Any) -> None:
    lat = sub.add_parser("latency", help="latency tables: profile, predict, calibrate, show, validate, bundle, import")
    lsub = lat.add_subparsers(dest="latency_command", required=True, metavar="COMMAND")

    s = lsub.add_parser("profile", help="time every distinct layer of a space with onnxruntime on this machine")
    add_space_args(s)
    s.add_argument("--out", required=True, help="table file to write (resumed if it exists)")
    s.add_argument("--provider", default="CPUExecutionProvider", help="onnxruntime execution provider")
    s.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    s.add_argument("--opt-level", default="all", help="graph optimisation: disable|basic|extended|all")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--repeats", type=int, default=50)
    s.add_argument("--device", help="device name to record (default: host name)")
    s.add_argument("--clock", choices=["wall", "cpu", "auto"], default="auto",
                   help="wall time, this thread's CPU time corrected for preemption (threads=1), or auto: cpu "
                        "with one thread, wall with more (default auto; recorded in the table)")
    s.add_argument("--calibration-nets", type=int, default=10, metavar="N",
                   help="time N sampled nets with their layers after the layers and store a correction of "
                        "the nets' bias against the sum of their layers (default 10; 0: none)")
    s.add_argument("--precision", default="float32", metavar="float32|int8",
                   help="int8: time each layer as a statically quantized QDQ graph (onnxruntime, per-channel "
                        "weights; default float32)")
    s.add_argument("--dataset", help="int8 calibration images: a dataset spec (digits, synthetic, cifar10:PATH, "
                                     "imagefolder:PATH) or a .npy file of N x C x H x W images (default digits)")
    s.add_argument("--int8-strict", action="store_true",
                   help="int8: refuse layers holding ops onnxruntime has no int8 kernel for (default: those ops "
                        "run in float between dequantize and quantize, as in a whole quantized net, and the "
                        "table records them per layer)")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_profile, interrupted="the layers measured so far are kept in the table - "
                                                "run the same command again to resume")

    s = lsub.add_parser("predict", help="predict an arch's (or any ONNX model's) latency on a target")
    add_space_args(s, required=False)
    s.add_argument("--target", action="append", required=True, help="target name or table file, repeatable")
    s.add_argument("--arch", help="block string, preset name or arch JSON")
    s.add_argument("--archs", metavar="FILE", help="bulk: one arch per line; prints one row (JSON: an object "
                                                   "with arch and latency_ms) per arch and target")
    s.add_argument("--onnx", metavar="MODEL.onnx",
                   help="any ONNX model: costed per node on device models (pixel1), timed here on cpu")
    s.add_argument("--input-shape", metavar="N,C,H,W", help="the ONNX input's shape (needed if it is dynamic)")
    s.add_argument("--breakdown", action="store_true", help="per-layer (per-node with --onnx) entries")
    s.add_argument("--clock", choices=["wall", "cpu", "auto"], default="auto",
                   help="--onnx --target cpu: clock of the timed runs (auto: the cpu clock for one thread, as "
                        "profile / validate; default)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = lsub.add_parser("calibrate", help="fit a device model to whole-net latencies of a few nets (CSV arch,ms)")
    add_space_args(s)
    s.add_argument("--measurements", required=True, metavar="FILE.csv",
                   help="CSV with header 'arch,ms': block string and measured whole-net latency, >= 5 archs (10+ advised)")
    s.add_argument("--out", required=True, metavar="DEVICE.json", help="table file to write (use as --target)")
    s.add_argument("--device", help="device name to record (default: from the measurements file name)")
    s.add_argument("--basis", metavar="all|A,B",
                   help="nb201: the measured devices' latencies join the blended families ('all': the 27 "
                        "shipped); the table then holds the prediction of every arch")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_calibrate)

    s = lsub.add_parser("show", help="a target's tables and their measurement metadata")
    s.add_argument("target", help="target name (see 'nas list targets') or table file")
    s.add_argument("--space", help="only this space's table")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = lsub.add_parser("validate", help="measure sampled whole nets and compare with a table's predictions")
    add_space_args(s)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--table", help="table file to check")
    g.add_argument("--target", help="shipped target whose table to check (see 'nas list targets')")
    s.add_argument("--samples", type=int, default=20, help="archs to sample and measure (default 20)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--joint", action=argparse.BooleanOptionalAction, default=True,
                   help="time the nets' layers interleaved with the nets in the same run (default on)")
    s.add_argument("--rounds", type=int, default=None,
                   help="round-robin passes of the interleaved timing, 1-1000 (default 10; int8 tables 25, each "
                        "time the median of its round medians)")
    s.add_argument("--chunk", type=int, default=None,
                   help="nets timed together per group, 0: all at once (default 8; int8 tables: all at once "
                        "while nets and layers fit 400 sessions)")
    s.add_argument("--clock", choices=["wall", "cpu", "auto"], default="auto",
                   help="wall time, or this thread's CPU time corrected for preemption (threads=1; robust to "
                        "other busy processes), or auto: cpu when the load average leaves fewer free cores "
                        "than threads (default auto; a busy machine is reported either way)")
    s.add_argument("--fit-correction", action="store_true", help="fit a learned correction, report held-out error")
    s.add_argument("--holdout", type=float, default=0.5, help="share of archs held out from the fit")
    s.add_argument("--save-correction", metavar="OUT.json", help="write the table with the correction (fit on all)")
    s.add_argument("--plot", metavar="OUT.png", help="plot predicted vs measured")
    s.add_argument("--dataset", help="int8 tables: their calibration images again (default: the bundled digits, "
                                     "when the table used them)")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_validate)

    s = lsub.add_parser("bundle", help="export a space's layers as ONNX + manifest for a device without nas")
    add_space_args(s)
    s.add_argument("--out", required=True, help="bundle folder (resumed if it holds the same bundle)")
    s.add_argument("--provider", default="CPUExecutionProvider", help="default provider for the device script")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--opt-level", default="all", help="graph optimisation: disable|basic|extended|all")
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--repeats", type=int, default=50)
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bundle)

    s = lsub.add_parser("import", help="turn a bundle's results.jsonl into a latency table")
    s.add_argument("bundle", help="bundle folder with manifest.json (and results.jsonl)")
    s.add_argument("--out", required=True, help="table file to write")
    s.add_argument("--results", help="results file (default BUNDLE/results.jsonl)")
    s.add_argument("--device", help="device name to record (default: the device's host name)")
    s.add_argument("--allow-missing", action="store_true", help="write a partial table if layers lack results")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_import)
