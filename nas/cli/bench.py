"""`nas bench ...`: benchmark commands against shipped ground truth (thin: parse, call, print).

    nas bench proxies --space nb201 --truth cifar10 [--dataset DATA] [--archs N] [--proxies a,b] [--json]
    nas bench proxies --space nasnet -o variant=darts --truth nb301 [--archs N] ...
    nas bench latency [--devices a,b] [--sizes 5,10,20] [--repeats 5] [--leave-out device|kind] [--json]
    nas bench strategies --space nats_sss|nb201 [--seeds 20] [--budgets 50,100,300] [--json] [--plot P.png]
    nas bench budgets [--strategies a,b] [--seeds 10] [--target pixel1] [--quantile 10] [--json]
    nas bench ranking --space nats_sss|nb201 [--dataset shapes] [--truth T] [--archs 50] [--seeds 2] [--out F]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def cmd_bench_proxies(args: argparse.Namespace) -> int:
    from nas.bench.proxies import format_ranking, proxy_ranking
    from nas.cli.args import space_options
    from nas.training.threads import set_torch_threads
    set_torch_threads(args.torch_threads or 1)   # small nets: one thread per process is fastest on shared cores
    if args.out:   # checked before minutes of work
        from nas.core.files import check_writable
        check_writable(args.out, "--out")
    proxies = [p.strip() for p in args.proxies.split(",") if p.strip()] if args.proxies else None
    result: dict[str, Any] = proxy_ranking(args.space, truth=args.truth, dataset=args.dataset, archs=args.archs,
                                           proxies=proxies, batch=args.batch, seed=args.seed,
                                           progress=not args.quiet, space_options=space_options(args.space_option))
    if args.out:
        from nas.core.files import atomic_write_text
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1) if args.json else format_ranking(result))
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from latency.bench_calibration import format_leave_device_out, leave_device_out
    from nas.core.errors import UsageError
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    try:
        sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
    except ValueError:
        raise UsageError(f"--sizes {args.sizes!r} must be comma-separated integers, e.g. 5,10,20") from None
    if args.out:   # checked before the work
        from nas.core.files import check_writable
        check_writable(args.out, "--out")
    result = leave_device_out(devices, sizes, repeats=args.repeats, seed=args.seed, leave_out=args.leave_out,
                              help_six=not args.no_help_six)
    if args.out:
        from nas.core.files import atomic_write_text
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1) if args.json else format_leave_device_out(result))
    return 0


def cmd_bench_strategies(args: argparse.Namespace) -> int:
    from nas.bench.strategies import format_strategies, plot_strategies, strategy_benchmark
    from nas.core.errors import UsageError
    strategies = [p.strip() for p in args.strategies.split(",") if p.strip()] if args.strategies else None
    try:
        budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        raise UsageError(f"--budgets {args.budgets!r} must be comma-separated evaluation counts, e.g. 50,100,300") from None
    for option, path in (("--out", args.out), ("--plot", args.plot)):
        if path:   # checked before minutes of runs
            from nas.core.files import check_writable
            check_writable(path, option)
    result = strategy_benchmark(args.space, strategies=strategies, seeds=args.seeds, budgets=budgets,
                                target=args.target, latency_ms=args.latency_ms, seed=args.seed,
                                progress=not args.quiet)
    if args.plot:
        result["plot"] = plot_strategies(result, args.plot)
    if args.out:
        from nas.core.files import atomic_write_text
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1) if args.json else format_strategies(result))
    return 0


def cmd_bench_budgets(args: argparse.Namespace) -> int:
    import sys

    from nas.bench.budgets import budget_benchmark, format_budgets
    from nas.training.threads import set_torch_threads
    if args.out:
        from nas.core.files import check_writable
        check_writable(args.out, "--out")
    set_torch_threads(args.torch_threads or 1)
    strategies = [p.strip() for p in args.strategies.split(",") if p.strip()] if args.strategies else None

    def show(run: dict[str, Any]) -> None:
        if not args.quiet:
            slack = f", slack {run['slack_ms']:.3f} ms" if run.get("slack_ms") is not None else ""
            lost = f", score lost {run['score_lost']:.4f}" if run.get("score_lost") is not None else ""
            print(f"  {run['strategy']} {run['space']} seed {run['seed']}: {'met' if run['met'] else 'MISSED'}{slack}"
                  f"{lost}{', projected' if run.get('projected') else ''} ({run['cpu_s']:.1f} cpu s)"
                  + (f": {run['error']}" if run.get("error") else ""), file=sys.stderr, flush=True)

    result = budget_benchmark(strategies, seeds=args.seeds, target=args.target, quantile=args.quantile, on_run=show,
                              first_seed=args.seed, dataset=args.dataset)
    if args.out:
        from nas.core.files import atomic_write_text
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1) if args.json else format_budgets(result))
    return 0


def cmd_bench_ranking(args: argparse.Namespace) -> int:
    import sys

    from nas.bench.ranking import RankingConfig, format_result, supernet_ranking
    from nas.cli.args import space_options
    from nas.training.data import parse_spec
    from nas.training.threads import set_torch_threads
    cfg = RankingConfig(space=args.space, truth=args.truth, dataset=args.dataset, archs=args.archs, seeds=args.seeds,
                        epochs=args.epochs, lr=args.lr, standalone_warmup=args.standalone_warmup,
                        clip_grad=args.clip_grad, ema=args.ema, label_smoothing=args.label_smoothing,
                        supernet_epochs=args.supernet_epochs,
                        supernet_lr=args.supernet_lr, supernet_optimizer=args.supernet_optimizer,
                        sampling=args.sampling, warmup=args.warmup, random_paths=args.random_paths, distill=not args.no_distill,
                        batch_size=args.batch_size, resolution=args.resolution, channels=args.channels,
                        cells=args.cells, calib_batches=args.calib_batches, seed=args.seed,
                        supernet_seed=args.supernet_seed, space_options=space_options(args.space_option))
    parse_spec(cfg.dataset)   # bad input: one line before minutes of training
    from nas.bench.proxies import _bench_space
    _bench_space(cfg.space, cfg.truth_name, cfg.space_options)
    if args.out:
        from nas.core.files import check_writable
        check_writable(args.out, "--out")
    set_torch_threads(args.torch_threads or 1)

    def stage(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr, flush=True)

    result = supernet_ranking(cfg, progress=not args.quiet, standalone_from=args.standalone_from, on_stage=stage)
    if args.out:
        from nas.core.files import atomic_write_text
        atomic_write_text(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1) if args.json else format_result(result))
    return 0


# a benchmark writes its result only at the end: an interruption keeps nothing (not "trials are saved")
BENCH_STOPPED = "the benchmark stopped; nothing was saved (its result is written only when it finishes)"


def add_bench_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="benchmarks against shipped ground truth (NAS-Bench-201, NATS)")
    bsub = b.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    s = bsub.add_parser("proxies", help="Spearman / Kendall of every zero-cost proxy vs ground-truth accuracy")
    s.add_argument("--space", required=True, help="nb201, nats_sss or nasnet (with -o variant=darts)")
    s.add_argument("-o", "--space-option", action="append", metavar="KEY=VALUE",
                   help="space option (nasnet: -o variant=darts; the nets default to NB301's 32 channels, 8 cells)")
    s.add_argument("--truth", default="cifar10", help="ground-truth column: cifar10 | cifar100 | ImageNet16-120 "
                                                     "(nb201), cifar10 (nats_sss), nb301 (nasnet -o variant=darts)")
    s.add_argument("--dataset", default="digits", metavar="SPEC",
                   help="batch for data-dependent proxies: digits (default, embedded), synthetic, cifar10:PATH")
    s.add_argument("--archs", type=int, metavar="N", help="score a seeded sample of N archs (default: all with truth)")
    s.add_argument("--proxies", metavar="A,B", help="only these proxies (default: all)")
    s.add_argument("--batch", type=int, default=16, help="images per proxy batch (default 16)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--torch-threads", type=int, metavar="N", help="torch CPU threads (default 1)")
    s.add_argument("--out", help="also write the JSON result to this file")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print JSON: per proxy spearman and kendall")
    s.set_defaults(func=cmd_bench_proxies, interrupted=BENCH_STOPPED)

    s = bsub.add_parser("latency", help="leave-device-out: nas latency calibrate on every measured NB201 device from n "
                                         "nets, ours vs nearest device vs live-op counts (Spearman vs all archs)")
    s.add_argument("--devices", metavar="A,B", help="measured devices (default: all 27; see 'nas list targets')")
    s.add_argument("--sizes", default="5,10,20", help="measured nets to calibrate on (default 5,10,20)")
    s.add_argument("--repeats", type=int, default=5, help="random draws of nets per device and size (default 5)")
    s.add_argument("--leave-out", default="device", choices=("device", "kind"),
                   help="the basis of shipped devices excludes the device (default) or every device of its kind")
    s.add_argument("--no-help-six", action="store_true", help="skip HELP's six test devices at n=10")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", help="also write the JSON result to this file")
    s.add_argument("--json", action="store_true", help="print JSON: per device and size the Spearman")
    s.set_defaults(func=cmd_bench_latency, interrupted=BENCH_STOPPED)

    t = bsub.add_parser("strategies", help="best ground-truth accuracy found vs evaluations: strategies vs random search")
    t.add_argument("--space", required=True, help="nats_sss (pixel1 model, <= 10 ms), nb201 (NASLib's 724 archs, "
                                                 "measured pixel3, <= 14 ms) or nasnet (DARTS cells of NB301, "
                                                 "pixel1 model, <= 120 ms)")
    t.add_argument("--strategies", metavar="A,B",
                   help="default: evolution,bo,tpe,zero-cost,nsga2,optuna-nsga2 (random always runs)")
    t.add_argument("--seeds", type=int, default=20, help="seeds per strategy (default 20)")
    t.add_argument("--budgets", default="50,100,300", help="evaluation counts to report (default 50,100,300)")
    t.add_argument("--target", help="latency target (default: pixel1 for nats_sss, pixel3 for nb201)")
    t.add_argument("--latency-ms", type=float, help="latency bound (default: 10 for nats_sss, 14 for nb201)")
    t.add_argument("--seed", type=int, default=0, help="first seed (seeds SEED ... SEED+seeds-1)")
    t.add_argument("--plot", metavar="PNG", help="write best accuracy and hypervolume vs evaluations here")
    t.add_argument("--out", help="also write the JSON result to this file")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--json", action="store_true", help="print JSON: per strategy and budget, mean/std, p-value")
    t.set_defaults(func=cmd_bench_strategies, interrupted=BENCH_STOPPED)

    u = bsub.add_parser("budgets", help="share of seeds whose result meets a tight latency bound, per strategy family")
    u.add_argument("--strategies", metavar="A,B", help="default: every family (evolution, random, tpe, exact, supernet, "
                                                      "single-path, differentiable, darts)")
    u.add_argument("--seeds", type=int, default=10, help="searches per strategy (default 10)")
    u.add_argument("--seed", type=int, default=0, help="first seed (seeds SEED ... SEED+seeds-1)")
    u.add_argument("--dataset", default="synthetic:64", metavar="SPEC",
                   help="training data of the weight-sharing families (default synthetic:64: cheap; digits for "
                        "meaningful scores)")
    u.add_argument("--target", default="pixel1", help="latency target (default pixel1)")
    u.add_argument("--quantile", type=float, default=10.0,
                   help="the bound: this percentile of random archs' latency (default 10)")
    u.add_argument("--torch-threads", type=int, metavar="N", help="torch CPU threads (default 1)")
    u.add_argument("--out", help="also write the JSON result to this file")
    u.add_argument("--quiet", action="store_true", help="no per-run lines")
    u.add_argument("--json", action="store_true", help="print JSON: per strategy the share met, slack, score lost")
    u.set_defaults(func=cmd_bench_budgets, interrupted=BENCH_STOPPED)

    from nas.bench.ranking import SUPERNET_DEFAULTS
    from nas.bench.ranking import RankingConfig as R
    r = bsub.add_parser("ranking", help="Kendall / Spearman of supernet scores vs stand-alone training and ground truth, "
                                        "with stand-alone seed-to-seed agreement as the ceiling")
    r.add_argument("--space", required=True, help="nats_sss (slimmable, sandwich rule), nb201 (single-path cells) or "
                                                 "nasnet with -o variant=darts (NB301 candidates)")
    r.add_argument("-o", "--space-option", action="append", metavar="KEY=VALUE", help="nasnet: -o variant=darts")
    r.add_argument("--truth", help="ground-truth column: cifar10 (default for nats_sss, nb201), cifar100 | "
                                   "ImageNet16-120 (nb201), nb301 (nasnet)")
    r.add_argument("--dataset", default=R.dataset, metavar="SPEC",
                   help="training data: shapes2 (default, generated), shapes2:N, shapes3[:N], shapes[:N], cifar10:PATH (the published "
                        "setting), ...")
    r.add_argument("--archs", type=int, default=R.archs, help=f"archs with truth to rank (default {R.archs}, 10..1000)")
    r.add_argument("--seeds", type=int, default=R.seeds, help="stand-alone training seeds (default 2, 2..5)")
    r.add_argument("--epochs", type=int, default=R.epochs, help=f"stand-alone epochs (default {R.epochs})")
    r.add_argument("--lr", type=float, default=R.lr, help=f"stand-alone AdamW learning rate (default {R.lr:g})")
    r.add_argument("--standalone-warmup", type=float, default=R.standalone_warmup, metavar="EPOCHS",
                   help=f"stand-alone linear LR warm-up in epochs, fractions allowed (default {R.standalone_warmup:g})")
    r.add_argument("--clip-grad", type=float, default=R.clip_grad, metavar="NORM",
                   help=f"stand-alone gradient-norm clipping, 0 off (default {R.clip_grad:g})")
    r.add_argument("--ema", type=float, default=R.ema, metavar="DECAY",
                   help=f"stand-alone: evaluate an EMA of the weights with this decay, 0 off (default {R.ema:g})")
    r.add_argument("--label-smoothing", type=float, default=R.label_smoothing,
                   help=f"stand-alone label smoothing (default {R.label_smoothing:g})")
    r.add_argument("--supernet-epochs", type=int, default=None,
                   help="supernet epochs (default: " + ", ".join(f"{e} for {sp}" for sp, (e, _) in SUPERNET_DEFAULTS.items()) + ")")
    r.add_argument("--supernet-lr", type=float, default=R.supernet_lr, help=f"supernet lr (default {R.supernet_lr:g})")
    r.add_argument("--supernet-optimizer", default=R.supernet_optimizer, metavar="NAME",
                   help="supernet optimizer: adamw (default) | sgd (Nesterov)")
    r.add_argument("--sampling", metavar="NAME", help="supernet paths per step: sandwich (nats_sss default) | uniform "
                                                     "| fair (FairNAS: every choice once per step; nb201 default)")
    r.add_argument("--warmup", type=int, default=R.warmup, help=f"supernet linear warm-up steps (default {R.warmup})")
    r.add_argument("--random-paths", type=int, default=R.random_paths,
                   help="random paths per supernet step besides largest and smallest (default 2)")
    r.add_argument("--no-distill", action="store_true", help="no in-place distillation (sandwich spaces)")
    r.add_argument("--batch-size", type=int, default=R.batch_size, help=f"batch (default {R.batch_size})")
    r.add_argument("--resolution", type=int, default=R.resolution, help=f"training resolution (default {R.resolution})")
    r.add_argument("--channels", type=int, default=R.channels, help="cell spaces: proxy channels (default 8)")
    r.add_argument("--cells", type=int, default=R.cells, help="cell spaces: proxy cells per stage (default 1)")
    r.add_argument("--calib-batches", type=int, default=R.calib_batches, help="BN recalibration batches (default 8)")
    r.add_argument("--standalone-from", metavar="JSON",
                   help="reuse the stand-alone accuracies of an earlier --out (same archs and stand-alone settings)")
    r.add_argument("--seed", type=int, default=0, help="draws the archs and the data, seeds everything else")
    r.add_argument("--supernet-seed", type=int, metavar="N",
                   help="the supernet's own seed (init, paths, calibration), to repeat it on the same archs and data")
    r.add_argument("--torch-threads", type=int, metavar="N", help="torch CPU threads (default 1)")
    r.add_argument("--out", help="also write the JSON result to this file (atomically)")
    r.add_argument("--quiet", action="store_true", help="no progress")
    r.add_argument("--json", action="store_true", help="print the JSON result")
    r.set_defaults(func=cmd_bench_ranking, interrupted=BENCH_STOPPED)
