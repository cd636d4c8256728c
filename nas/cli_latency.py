"""`nas latency ...`: profile a table on this device, predict an arch's latency, show a target."""
from __future__ import annotations

import argparse
from typing import Any

from nas.cli import add_space_args, emit, get_space_from, set_torch_threads


def cmd_profile(args: argparse.Namespace) -> int:
    from latency.profile import ProfileSettings, profile_space
    set_torch_threads(None)   # torch only builds and exports the layers; onnxruntime uses --threads
    space = get_space_from(args)
    settings = ProfileSettings(provider=args.provider, threads=args.threads, opt_level=args.opt_level,
                               batch=args.batch, warmup=args.warmup, repeats=args.repeats)
    table = profile_space(space, args.out, settings, device=args.device, progress=not args.quiet)
    m = table.metadata
    emit(args, {"out": args.out, "entries": len(table.entries), **m},
         f"wrote {args.out}: {len(table.entries)} layers of {space.name} on {m['device']} ({m['cpu']}), "
         f"{m['provider']} threads={m['threads']}, {m['profile_seconds']:.1f} s")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from latency.targets import lut_model
    space = get_space_from(args)
    arch = space.parse_any(args.arch)
    rows: dict[str, Any] = {}
    for t in args.target:
        model = lut_model(t, space)
        rows[t] = {"latency_ms": model.predict(arch)}
        if args.breakdown:
            rows[t]["layers"] = model.breakdown(arch)
    text = []
    for t, r in rows.items():
        text.append(f"{t}: {r['latency_ms']:.3f} ms")
        for key, ms in r.get("layers", []):
            text.append(f"  {ms:8.3f}  {key}")
    emit(args, {"arch": space.format(arch), "targets": rows}, "\n".join(text))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from latency.targets import load_table, target_spaces
    spaces = [args.space] if args.space else target_spaces(args.target) if not args.target.endswith(".json") else []
    tables = [load_table(args.target, s) for s in spaces] if spaces else [load_table(args.target, "")]
    out, text = [], []
    for t in tables:
        info = {"space": t.space, "entries": len(t.entries), "metadata": t.metadata, "source": t.source}
        out.append(info)
        text.append(f"{args.target} / {t.space}: {len(t.entries)} layers ({t.source})")
        text += [f"  {k}: {v}" for k, v in t.metadata.items() if not isinstance(v, (dict, list))]
    emit(args, out, "\n".join(text))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import sys
    set_torch_threads(None)

    from latency.table import LatencyTable
    from latency.targets import load_table
    from latency.validate import format_report, plot, validate, with_correction
    from nas.errors import UsageError
    space = get_space_from(args)
    if args.save_correction and not args.fit_correction:
        raise UsageError("--save-correction needs --fit-correction")
    table = LatencyTable.load(args.table) if args.table else load_table(args.target, space.name)
    result = validate(space, table, samples=args.samples, seed=args.seed, joint=args.joint, rounds=args.rounds,
                      chunk=args.chunk, fit=args.fit_correction, holdout=args.holdout, progress=not args.quiet,
                      clock=args.clock)
    r = result.report
    text = format_report(r)
    if args.plot:
        r["plot"] = str(plot(r, args.plot))
        text += f"\nplot: {args.plot}"
    if args.save_correction and result.correction is not None:
        with_correction(table, result.correction).save(args.save_correction)
        r["saved"] = args.save_correction
        text += (f"\nwrote {args.save_correction}: the table with a correction fitted on all {r['samples']} archs "
                 f"(LUTModel applies it when loading)")
    if args.json:
        for w in r.get("warnings", []):
            print(f"nas: warning: {w}", file=sys.stderr)
    emit(args, r, text)
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from latency.bundle import export_bundle
    set_torch_threads(None)
    from latency.profile import ProfileSettings
    space = get_space_from(args)
    settings = ProfileSettings(provider=args.provider, threads=args.threads, opt_level=args.opt_level,
                               batch=args.batch, warmup=args.warmup, repeats=args.repeats)
    m = export_bundle(space, args.out, settings, progress=not args.quiet)
    emit(args, {k: v for k, v in m.items() if k != "layers"} | {"out": args.out, "layers": len(m["layers"])},
         f"wrote {args.out}: {len(m['layers']) - 1} layers of {space.name} + the empty-call graph as ONNX, "
         f"manifest.json and profile_onnx.py\non the device (needs only onnxruntime + numpy): "
         f"python profile_onnx.py {args.out} [--threads N --rounds 5 --timeout-s 60]\n"
         f"then here: nas latency import {args.out} --out TABLE.json")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    import sys

    from latency.bundle import import_results
    table, rep = import_results(args.bundle, args.results, args.device, args.allow_missing)
    table.save(args.out)
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
    lat = sub.add_parser("latency", help="latency tables: profile, predict, show, validate, bundle, import")
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
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_profile)

    s = lsub.add_parser("predict", help="predict an arch's latency from a target's table")
    add_space_args(s)
    s.add_argument("--target", action="append", required=True, help="target name or table file, repeatable")
    s.add_argument("--arch", required=True, help="block string, preset name or arch JSON")
    s.add_argument("--breakdown", action="store_true", help="per-layer entries")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

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
    s.add_argument("--rounds", type=int, default=10, help="round-robin passes of the interleaved timing")
    s.add_argument("--chunk", type=int, default=8, help="nets timed together per group (0: all at once)")
    s.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall time, or this thread's CPU time (threads=1; robust to other busy processes)")
    s.add_argument("--fit-correction", action="store_true", help="fit a learned correction, report held-out error")
    s.add_argument("--holdout", type=float, default=0.5, help="share of archs held out from the fit")
    s.add_argument("--save-correction", metavar="OUT.json", help="write the table with the correction (fit on all)")
    s.add_argument("--plot", metavar="OUT.png", help="plot predicted vs measured")
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
