"""The `nas` command line: a table of subcommands, one clear line per user error.

A thin layer: each subcommand parses its arguments, calls one function of the Python API
(nas/api.py, nas/api_latency.py) and prints what it returns.

Exit codes: 0 ok, 1 failure (NasError), 2 usage (bad arguments, unknown names, malformed archs),
130 interrupted (SIGINT), 143 stopped by SIGTERM; both keep the finished trials.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence

from nas.cli.args import Terminated, add_space_args, emit, space_options
from nas.cli.search import add_search_parser, budget_lines, cmd_search  # noqa: F401  (moved; still importable here)
from nas.core.errors import NasError, UsageError

Command = Callable[[argparse.Namespace], int]


# ---- list ---------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    # not through nas.api: the catalogue needs neither the search pipeline nor numpy (issue 29)
    from nas.pipeline.catalogue import SECTIONS, lines, list_catalogue
    sections = [args.what] if args.what else list(SECTIONS)
    rows = {what: list_catalogue(what, args.verbose_list) for what in sections}
    if args.what:
        emit(args, rows[args.what], "\n".join(lines(args.what, rows[args.what], args.verbose_list)))
    else:
        emit(args, rows, "\n\n".join(f"{what}:\n" + "\n".join("  " + line for line in
                                                               lines(what, r, args.verbose_list))
                                     for what, r in rows.items()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from nas.api import report
    from nas.pipeline.report import PARETO_ROWS, pareto_table
    info, record = report(args.folder, args.storage, args.study, args.out, x=args.x, y=args.y)
    table = pareto_table(record.trials, info["x"], args.y, limit=PARETO_ROWS, fmt=record.arch_format(),
                         targets=record.targets())
    text = (f"{info['trials']} trials ({info['failed']} failed)\n{table}\n"
            f"wrote {info['png']}, {info['html']}, {info['csv']}")
    emit(args, info, text)
    return 0


# ---- show / export ------------------------------------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    from nas.api import show
    info = show(args.space, args.arch, args.target or [], space_options(args.space_option))
    lat = "".join(f"\n  latency on {t}: {v:.2f} ms" for t, v in info["latency_ms"].items())
    emit(args, info, f"{info['arch']}\n  key {info['key']}: {info['params_m']:.3f} M params, "
                     f"{info['macs_m']:.1f} M MACs, {info['layers']} layers{lat}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from nas.api import export
    info = export(args.result, args.format, args.out, args.seed, batch=args.batch, opset=args.opset,
                  precision=args.precision, dataset=args.dataset)
    if info.get("precision") == "int8":
        from nas.cli.args import int8_text
        emit(args, info, int8_text(info))
        return 0
    extra = f" (max |{args.format} - torch| = {info['max_abs_diff_vs_torch']:.2e})" if "max_abs_diff_vs_torch" in info else ""
    emit(args, info, f"wrote {info['out']}{extra}; weights {info['weights']}")
    return 0


# ---- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from nas import __version__
    from nas.cli.latency import add_latency_parser
    from nas.cli.bench import add_bench_parser
    from nas.cli.train import add_train_parser
    p = argparse.ArgumentParser(prog="nas", description="Neural architecture search with hardware-latency models.")
    p.add_argument("--version", action="version", version=f"nas {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="catalogue of spaces, strategies, evaluators and targets, with their options")
    s.add_argument("what", nargs="?", choices=["spaces", "targets", "strategies", "evaluators"],
                   help="one section only (default: all)")
    s.add_argument("--verbose", dest="verbose_list", action="store_true",
                   help="every option with its default, one per line")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_list)

    add_search_parser(sub)

    s = sub.add_parser("show", help="params, MACs and predicted latency of an arch")
    add_space_args(s)
    s.add_argument("--arch", required=True, help="block string, preset name or arch JSON")
    s.add_argument("--target", action="append", help="predict latency on this target, repeatable")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("export", help="export a search result (best.json) or trained .pt as ONNX, torch, "
                                      "TorchScript or JSON")
    s.add_argument("result", help="best.json written by 'nas search' (random weights), or model.pt written by "
                                  "'nas train' / 'nas export --format torch' (its weights)")
    s.add_argument("--format", required=True, help="onnx | torch | torchscript | json")
    s.add_argument("--out", required=True, help="output file, or an existing folder to write model.<ext> into")
    s.add_argument("--seed", type=int, default=0, help="seed of the initial weights")
    s.add_argument("--batch", type=int, help="onnx: fix the batch size to N (default: a dynamic batch axis)")
    s.add_argument("--opset", type=int, help="onnx: opset version (default 17)")
    s.add_argument("--precision", default="float32", metavar="float32|int8",
                   help="int8: a statically quantized QDQ ONNX file (per-channel weights), checked to run in "
                        "onnxruntime, with held-out accuracy before and after quantization")
    s.add_argument("--dataset", metavar="SPEC", help="int8: calibration images (train split) and held-out images "
                                                     "(val split, split seed --seed) of this dataset (default digits)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("report", help="Pareto plot (PNG), HTML report and CSV of a search's trials")
    s.add_argument("folder", nargs="?", help="the --out folder of 'nas search'")
    s.add_argument("--storage", help="read trials from this storage instead (with --study)")
    s.add_argument("--study", help="study name in the storage")
    s.add_argument("--out", help="folder for pareto.png, report.html, trials.csv (default: the search folder)")
    s.add_argument("--x", help="metric to minimise on the x axis, e.g. latency_ms.pixel1 (default: the latency "
                              "on every target of the search, one panel each)")
    s.add_argument("--y", default="score", help="metric to maximise on the y axis (default score)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_report)

    add_latency_parser(sub)
    add_train_parser(sub)
    add_bench_parser(sub)
    return p


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM stop the command cleanly (if nobody handles it yet); returns the undo."""
    import signal
    import threading
    old = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or old not in (signal.SIG_DFL, None):
        return lambda: None
    signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, old)


#: longest error message printed whole (a 1 MB arch string is not echoed back)
MAX_MESSAGE = 600


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message` cut to `limit` characters, saying how long it was."""
    return message if len(message) <= limit else f"{message[:limit]}... ({len(message)} characters in all)"


def _quiet_stdout() -> None:
    """stdout's reader went away (`nas ... | head -1`): send what is left to /dev/null so that the
    interpreter's final flush raises nothing."""
    import os
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError that reached the CLI: what failed, on which file, and why in words."""
    import errno
    why = {errno.ENOSPC: "disk full (no space left on the device)",
           errno.EFBIG: "disk full for this process (file size limit, ulimit -f, reached)",
           errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
           errno.EACCES: "permission denied", errno.EPERM: "operation not permitted (immutable or protected file?)",
           }.get(exc.errno or -1, exc.strerror or str(exc) or type(exc).__name__)
    where = f" {exc.filename}" if exc.filename else ""
    verb = "write" if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS) else "access"
    return f"cannot {verb}{where}: {why}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    restore = _stop_on_sigterm()
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout()
        return 141   # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    except UsageError as exc:
        print(f"nas: error: {clip(str(exc))}", file=sys.stderr)
        return 2
    except NasError as exc:
        print(f"nas: error: {clip(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:   # a write that failed (disk full, read-only or immutable folder) or a read
        print(f"nas: error: {clip(describe_os_error(exc))}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as exc:
        what = getattr(exc, "nas_note", None) or getattr(   # a trainer's own note: what its checkpoint holds
            args, "interrupted", "finished trials are saved - run the same command again to resume")
        print(f"nas: interrupted; {what}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
