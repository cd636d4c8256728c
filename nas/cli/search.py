"""`nas search`: its arguments, the search configuration they make (new or --resume) and the printed summary."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from nas.cli.args import add_space_args, emit, space_options
from nas.core.errors import UsageError


def add_search_parser(sub: Any) -> None:
    """Add `nas search` to the subcommands `sub` (argparse's _SubParsersAction)."""
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
    defaults = vars(_search_parser().parse_args([]))
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
        from nas.store.storage import default_spec
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


def _search_parser() -> argparse.ArgumentParser:
    """`nas search`'s parser alone (for its defaults)."""
    p = argparse.ArgumentParser(prog="nas")
    sub = p.add_subparsers(dest="command")
    add_search_parser(sub)
    return sub.choices["search"]
