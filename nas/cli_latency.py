"""`nas latency ...`: profile a table on this device, predict an arch's latency, show a target."""
from __future__ import annotations

import argparse
from typing import Any

from nas.cli import add_space_args, emit, get_space_from


def cmd_profile(args: argparse.Namespace) -> int:
    from latency.profile import ProfileSettings, profile_space
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


def add_latency_parser(sub: Any) -> None:
    lat = sub.add_parser("latency", help="latency tables: profile, predict, show")
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
