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
from pathlib import Path
from typing import Any, Callable, Sequence

from nas.cli.args import Terminated, add_space_args, emit, space_options
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


# ---- search -------------------------------------------------------------------------------------
def _search_config(args: argparse.Namespace) -> Any:
    from nas.pipeline.config import SearchConfig, resume_config
    run = {"runner": args.runner, "workers": args.workers, "address": args.address, "max_retries": args.max_retries,
           "device": args.device, "heartbeat_s": args.heartbeat, "verify": args.verify}
    if args.resume is None:
        return SearchConfig(space=args.space, space_options=_with_candidates(args),
                            targets=tuple(args.target or ["pixel1"]), latency_ms=tuple(args.latency_ms or ()),
                            strategy=args.strategy, evaluator=args.evaluator,
                            trials=50 if args.trials is None else args.trials, seed=args.seed,
                            out=args.out, resume=not args.no_resume,
                            strategy_options=space_options(args.strategy_option),
                            evaluator_options=space_options(args.evaluator_option),
                            storage=args.storage, study=args.study, dataset=args.dataset, epochs=args.epochs,
                            batch_size=args.batch_size, quantize_top=args.quantize_top,
                            constraints=tuple(args.constraint or ()), **run)
    if args.candidates:
        raise UsageError(f"--resume {args.resume} searches the candidate list stored with it; drop --candidates")
    if args.no_resume or (args.out and args.out != args.resume):
        raise UsageError("--resume DIR continues the search in DIR; it cannot go with --no-resume or another --out")
    # settings given explicitly (not at their defaults) must match the stored ones; the rest come from DIR
    defaults = vars(build_parser().parse_args(["search"]))
    given = {field: conv(getattr(args, name)) for name, field, conv in (
        ("space", "space", str), ("space_option", "space_options", space_options),
        ("target", "targets", tuple), ("latency_ms", "latency_ms", tuple), ("strategy", "strategy", str),
        ("strategy_option", "strategy_options", space_options), ("evaluator", "evaluator", str),
        ("evaluator_option", "evaluator_options", space_options), ("seed", "seed", int),
        ("trials", "trials", int), ("storage", "storage", str), ("study", "study", str),
        ("dataset", "dataset", str), ("epochs", "epochs", int), ("batch_size", "batch_size", int),
        ("constraint", "constraints", tuple))
        if getattr(args, name) != defaults.get(name)}
    return resume_config(args.resume, {**given, **run})


def _with_candidates(args: argparse.Namespace) -> dict[str, Any]:
    """The -o space options plus `--candidates FILE` as the space option `candidates` (absolute path,
    so that a resumed search finds it from any folder)."""
    opts = space_options(args.space_option)
    if args.candidates is None:
        return opts
    if "candidates" in opts:
        raise UsageError(f"give the candidate list once: --candidates {args.candidates} or "
                         f"-o candidates={opts['candidates']}, not both")
    path = Path(args.candidates)
    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise UsageError(f"--candidates {args.candidates}: {what} (one block string per line)")
    return {**opts, "candidates": str(path.resolve())}


def _m(summary: dict[str, Any], key: str, fmt: str) -> str:
    """A size of the best arch in millions (its metrics, else the summary's count), or n/a."""
    value = summary["metrics"].get(key, (summary.get("size") or {}).get(key))
    return f"{value:{fmt}} M" if isinstance(value, (int, float)) else "n/a"


def cmd_search(args: argparse.Namespace) -> int:
    from nas.api import search
    cfg = _search_config(args)
    if not cfg.out and not cfg.storage:   # an interruption keeps nothing: say so, not "run it again to resume"
        args.interrupted = "nothing was saved (no --out or --storage)"
    result = search(cfg, progress=not args.quiet, torch_threads=args.torch_threads)
    if result is None:   # a torchrun rank other than 0: it trained its shard; rank 0 searches and prints
        return 0
    s = result.summary
    if result.best is None:
        print(f"no trial met the constraints ({', '.join(s['constraints'])}); {s['failed_trials']} failed",
              file=sys.stderr)
        return 1
    lat = ", ".join(f"{t} {v:.2f} ms" for t, v in s["latency_ms_by_target"].items())
    text = (f"best of {s['trials']} trials ({s['strategy']}, {s['seconds']:.1f} s, {s['failed_trials']} failed)\n"
            f"  arch:    {s['arch']}\n  latency: {lat}\n"
            f"  score:   {s['metrics'].get('score', float('nan')):.4g} ({s.get('score_is', s['evaluator'])})"
            f"   params: {_m(s, 'params_m', '.2f')}   MACs: {_m(s, 'macs_m', '.0f')}")
    if s.get("quantized_top"):
        text += f"\n  best after int8 quantization of the top {len(s['quantized_top'])} (re-trained):"
        text += "".join(f"\n    trial {r['trial']:>4}: accuracy {r['accuracy']:.4f} -> int8 {r['accuracy_int8']:.4f}  "
                        f"{r['arch']}" for r in s["quantized_top"])
    if cfg.out or cfg.storage:
        from nas.store.study import default_spec
        spec = cfg.storage or default_spec(cfg.out) or ""
        where = spec.partition(":")[2] if spec.startswith(("jsonl:", "journal:")) else spec
        text += f"\n  written: {cfg.out + '/best.json, ' if cfg.out else ''}trials in {where}"
        if "://" in spec or spec.startswith("journal:"):
            text += f"\n  view:    optuna-dashboard {where}" + (f"   |   nas report {cfg.out}" if cfg.out else "")
    if s.get("peak_rss_mb"):
        text += f"\n  memory:  peak {s['peak_rss_mb']:.0f} MB resident"
    back = (s.get("training") or {}).get("resumed")
    if back:   # training continued from a mid-training checkpoint of an interrupted run
        text += f"\n  training: resumed at step {back['step']} of {back['steps']} from {back['checkpoint']}"
    ex = s.get("exports") or {}
    if ex.get("torch"):
        files = ", ".join(str(ex[k]) for k in ("torch", "onnx") if ex.get(k))
        sizes = ", ".join(f"{k}={v['trained']} (searched {v['searched']})" for k, v in ex.get("trained_at", {}).items())
        built = " ".join(f"{k}={v}" for k, v in (ex.get("built_at") or {}).items())
        text += f"\n  weights: {files}" + (f" built at {built}" if built else "")
        text += (f"\n           trained at proxy size {sizes}; latency is for the searched "
                 f"size - 'nas train {cfg.out}/best.json' makes a deployable net"
                 if ex.get("train_size") == "proxy" else "\n           trained at the searched size")
        if ex.get("train_size_why"):
            text += f" ({ex['train_size_why']})"
    text += budget_lines(s)
    if not getattr(args, "json", False):
        from nas.pipeline.report import PARETO_ROWS, SearchRecord, latency_axes, pareto_table
        fmt = SearchRecord([], {"space": cfg.space, "space_options": cfg.space_options}, "").arch_format()
        text += "\n" + pareto_table(result.trials, latency_axes(result.trials, cfg.targets), limit=PARETO_ROWS, fmt=fmt,
                                    targets=cfg.targets)
    emit(args, s, text)
    return 0


def budget_lines(s: dict[str, Any]) -> str:
    """The budget report of a search summary: per bound the predicted value, bound and slack; the
    projection of a weight-sharing result; --verify's measurement."""
    b = s.get("budget")
    if not b:
        return ""
    text = "\n  budget:  " + "\n           ".join(
        f"{r['constraint']:<26} predicted {r['value']:.4g}  slack {r['slack']:+.4g}  {'ok' if r['ok'] else 'BROKEN'}"
        for r in b["constraints"])
    proj = (s.get("training") or {}).get("projection")
    if proj and proj.get("changed"):
        vals = lambda d: ", ".join(f"{k}={v:.4g}" for k, v in d.items())   # noqa: E731
        score = (f"; score {proj['unconstrained_score']:.4g} -> {proj['projected_score']:.4g}"
                 if isinstance(proj.get("unconstrained_score"), float) and
                 isinstance(proj.get("projected_score"), float) else "")
        text += (f"\n  projected: unconstrained {proj['unconstrained']} ({vals(proj['unconstrained_values'])})"
                 f"\n             -> {proj['projected']} ({vals(proj['projected_values'])}); "
                 f"{len(proj['changed'])} decision(s) changed by {proj['method']}{score}")
    v = b.get("verify")
    if v:
        pred = f"{v['predicted_ms']:.3f} ms" if v.get("predicted_ms") is not None else "no cpu prediction"
        bound = f", bound {v['bound_ms']:g} ms ({'met' if v['meets_bound'] else 'NOT met'})" if v.get("bound_ms") else ""
        text += (f"\n  verify:  cpu measured {v['measured_ms']:.3f} ms (p10 {v['p10_ms']:.3f}, p90 {v['p90_ms']:.3f}, "
                 f"{v['repeats']} runs, thread CPU time) vs predicted {pred}{bound}")
    return text


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

    s = sub.add_parser("search", help="search a space for accurate, fast archs on a target")
    add_space_args(s, required=False)
    s.add_argument("--target", action="append", help="latency target or table file, repeatable (default pixel1)")
    s.add_argument("--quantize-top", type=int, default=0, metavar="K",
                   help="with --evaluator train: re-train the K best feasible trials, quantize each to int8 "
                        "(static QDQ) and report as best the one with the highest held-out accuracy after "
                        "quantization (default 0: off)")
    s.add_argument("--latency-ms", action="append", type=float, metavar="MS",
                   help="latency bound, repeatable: the Nth bound applies to the Nth --target")
    s.add_argument("--constraint", action="append", metavar="METRIC<=VALUE",
                   help="hard bound, repeatable (all must hold): params_m, macs_m, peak_memory_mb (batch 1) or "
                        "latency_ms[TARGET], e.g. --constraint 'params_m<=3' --constraint 'latency_ms[cpu]<=8'")
    s.add_argument("--verify", metavar="DEVICE", help="cpu: export the best arch and time it on this machine "
                                                     "(measured vs predicted vs bound, in best.json's budget)")
    s.add_argument("--candidates", metavar="FILE",
                   help="search only the archs listed in FILE (one block string or arch JSON per line, '#' "
                        "comments): every space; same as -o candidates=FILE")
    s.add_argument("--strategy", default="evolution",
                   help="search strategy (default: evolution, regularized evolution within the latency bounds; "
                        "see 'nas list strategies')")
    s.add_argument("--strategy-option", action="append", metavar="KEY=VALUE", help="e.g. population=30; weight-sharing: train_size=auto|proxy|searched")
    s.add_argument("--evaluator", default="zero-cost",
                   help="how archs are scored (default: zero-cost, the naswot proxy at initialisation, no training; "
                        "see 'nas list evaluators')")
    s.add_argument("--evaluator-option", action="append", metavar="KEY=VALUE",
                   help="e.g. proxy=synflow (zero-cost proxy; default naswot)")
    s.add_argument("--dataset", metavar="SPEC", help="data for training and data-aware proxies: digits (default, "
                                                     "embedded), synthetic, cifar10:PATH or imagefolder:PATH")
    s.add_argument("--epochs", type=int, help="training epochs (supernet, single-path, darts; --evaluator train)")
    s.add_argument("--batch-size", type=int, help="training batch size (default 64); under torchrun the global batch, "
                                                  "split over the processes (weight-sharing strategies)")
    s.add_argument("--device", help="torch device for training and proxies: cpu (default), cuda or cuda:N")
    s.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch CPU threads (default: half the cores, at most 4; more threads than free cores "
                        "slows small-net training many times over)")
    s.add_argument("--trials", type=int, help="number of archs to evaluate (default 50, or the resumed search's)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="folder for best.json, trials.db (the Optuna study) and config.json; "
                                 "running the same command again resumes")
    s.add_argument("--resume", metavar="DIR", help="continue the search in DIR with its stored settings")
    s.add_argument("--no-resume", action="store_true", help="start over: discard trials already stored")
    s.add_argument("--storage", help="trial store: sqlite:///PATH, postgresql://..., journal:PATH or jsonl:PATH "
                                     "(default DIR/trials.db); view it with optuna-dashboard")
    s.add_argument("--study", help="study name in the storage (default: the --out folder's name)")
    s.add_argument("--runner", default="local", choices=["local", "ray"], help="where evaluations run (default local)")
    s.add_argument("--workers", type=int, help="ray: evaluations in flight (default: the CPUs Ray has)")
    s.add_argument("--address", help="ray: address of a running cluster (default: start Ray here)")
    s.add_argument("--max-retries", type=int, default=2, metavar="N",
                   help="evaluate a trial again up to N times when its worker or the search dies (default 2)")
    s.add_argument("--heartbeat", type=float, default=10.0, metavar="S",
                   help="shared --storage: refresh this search's claims every S seconds; a claim silent for "
                        "3*S+5 s is retried by another search (default 10)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    s.set_defaults(func=cmd_search)

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
