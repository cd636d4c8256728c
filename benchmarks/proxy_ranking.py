"""How well do zero-cost proxies rank archs? Spearman / Kendall vs briefly trained accuracy.

    python benchmarks/proxy_ranking.py [--archs 20] [--epochs 2] [--dataset digits] [--supernet-epochs 3]
                                       [--json out.json]

Samples `--archs` archs of a space (mbconv at small options by default: 32x32, width 0.35), trains
each `--train-seeds` times with the same recipe (`nas.evaluators.training.train_eval`: SGD + cosine, `--epochs`
on `--dataset`; the seeds change init and shuffling, not the data split) and
scores each with every proxy on one batch of the same dataset (the `zero-cost` evaluator at the
training resolution, plus the `ensemble`). Prints, per proxy, the rank correlations with the
mean trained accuracy and the proxy's seconds per arch, and the noise ceiling: the Spearman
correlation between two training seeds' accuracies of the same archs. A proxy cannot be judged
beyond that ceiling; with brief training on an easy set it is low (archs differ by less than
training noise), and with n = 20 archs a Spearman rho has a standard error of about 0.2.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np

log = logging.getLogger("proxy_ranking")


def train_accuracies(trainer: Any, arch: Any, seeds: int, base_seed: int) -> list[float]:
    """Accuracy of `arch` trained `seeds` times (other init and shuffling, same data split)."""
    import torch

    from nas.training.loops import train_eval
    accs = []
    for k in range(seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(base_seed * 1000 + k)
            model = trainer.train_space.build(arch, num_classes=trainer.num_classes)
        out = train_eval(model, trainer.train, trainer.val, seed=base_seed * 1000 + k, **trainer.kwargs)
        accs.append(out["accuracy"])
    return accs


def run(space_name: str, space_options: dict[str, Any], archs: int, epochs: int, dataset: str, seed: int,
        batch: int, progress: bool, device: str = "cpu", train_seeds: int = 2,
        supernet_epochs: int = 0) -> dict[str, Any]:
    from scipy import stats
    from tqdm import tqdm

    from nas.evaluators.proxies import PROXIES
    from nas.evaluators.zero_cost import ENSEMBLE, ZeroCostEvaluator
    from nas.evaluators.training import TrainEvaluator
    from search_spaces.catalog import get_space

    space = get_space(space_name, **space_options)
    rng = np.random.default_rng(seed)
    sample: list[Any] = []
    while len(sample) < archs:
        a = space.sample(rng)
        if a not in sample:
            sample.append(a)
    trainer = TrainEvaluator(space, seed=seed, dataset=dataset, epochs=epochs, progress=False, device=device)
    res = trainer.train[0].shape[-1]
    zc = ZeroCostEvaluator(space, seed=seed, proxy=ENSEMBLE, batch=batch, resolution=res, dataset=dataset,
                           device=device)
    names = PROXIES.names()
    estimators = [*names, ENSEMBLE]
    supernet_eval, supernet_seconds = None, 0.0
    if supernet_epochs > 0:   # (b): one sandwich-trained supernet of the same space, data and resolution
        from nas.strategies.weight_sharing import SupernetStrategy, TrainContext
        t = time.perf_counter()
        strategy = SupernetStrategy(space, seed=seed, epochs=supernet_epochs, resolution=res,
                                    train_options=space.options())
        supernet_eval = strategy.prepare(TrainContext(space=space, dataset=dataset, seed=seed, device=device,
                                                      progress=progress))
        supernet_seconds = time.perf_counter() - t
        estimators.append("supernet")
    rows = []
    seconds = {n: 0.0 for n in names}
    for a in tqdm(sample, desc="train + proxies", unit="arch", disable=not progress):
        t = time.perf_counter()
        accs = train_accuracies(trainer, a, train_seeds, seed)
        row: dict[str, Any] = {"arch": space.format(a), "accuracy": float(np.mean(accs)), "accuracies": accs,
                               "train_seconds": (time.perf_counter() - t) / train_seeds}
        for n in names:
            t = time.perf_counter()
            row[n] = zc.proxies(a, [n])[n]
            seconds[n] += time.perf_counter() - t
        t = time.perf_counter()
        row[ENSEMBLE] = zc.ensemble_score({m: row[m] for m in zc.members})
        seconds[ENSEMBLE] = seconds.get(ENSEMBLE, 0.0) + time.perf_counter() - t
        if supernet_eval is not None:
            t = time.perf_counter()
            row["supernet"] = supernet_eval(a)["accuracy"]
            seconds["supernet"] = seconds.get("supernet", 0.0) + time.perf_counter() - t
        rows.append(row)
        log.info("%s acc %.3f", row["arch"], row["accuracy"])
    acc = np.array([r["accuracy"] for r in rows])
    per_seed = np.array([r["accuracies"] for r in rows]).T            # train_seeds x archs
    # noise ceiling: how well one training run ranks archs like another (mean over seed pairs)
    pairs = [stats.spearmanr(per_seed[i], per_seed[j]).statistic
             for i in range(len(per_seed)) for j in range(i + 1, len(per_seed))]
    ceiling = float(np.mean(pairs)) if pairs else float("nan")
    table = {}
    for n in estimators:
        v = np.array([r[n] for r in rows], dtype=np.float64)
        v = np.where(np.isfinite(v), v, np.nanmin(np.where(np.isfinite(v), v, np.nan)) - 1.0)
        rho = stats.spearmanr(v, acc).statistic
        tau = stats.kendalltau(v, acc).statistic
        table[n] = {"spearman": float(rho), "kendall": float(tau), "seconds_per_arch": seconds[n] / len(rows)}
    return {"space": space_name, "space_options": space.options(), "dataset": dataset, "epochs": epochs,
            "device": device,
            "archs": len(rows), "seed": seed, "ensemble_members": list(zc.members),
            "accuracy": {"mean": float(acc.mean()), "min": float(acc.min()), "max": float(acc.max())},
            "train_seeds": train_seeds, "seed_to_seed_spearman": ceiling,
            "train_seconds_per_arch": float(np.mean([r["train_seconds"] for r in rows])),
            "supernet_epochs": supernet_epochs, "supernet_train_seconds": supernet_seconds,
            "correlations": table, "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="mbconv")
    ap.add_argument("--space-options", default='{"resolution": 32, "width_mult": 0.35, "num_classes": 10}',
                    help="JSON object of space options")
    ap.add_argument("--archs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--train-seeds", type=int, default=2,
                    help="trainings per arch (accuracy = their mean; their agreement = the noise ceiling)")
    ap.add_argument("--supernet-epochs", type=int, default=0,
                    help="also train a weight-sharing supernet this many epochs and rank by its estimate "
                         "(BN-recalibrated path accuracy); 0: skip")
    ap.add_argument("--batch", type=int, default=32, help="proxy batch size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="torch device for training and proxies (cpu, cuda)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    ap.add_argument("--json", help="also write the full result (every arch) to this file")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = run(args.space, json.loads(args.space_options), args.archs, args.epochs, args.dataset, args.seed,
              args.batch, not args.quiet, args.device, args.train_seeds, args.supernet_epochs)
    out["seconds"] = time.perf_counter() - t0
    a = out["accuracy"]
    print(f"space={out['space']} {json.dumps(out['space_options'])} dataset={out['dataset']} epochs={out['epochs']} "
          f"archs={out['archs']} seed={out['seed']}")
    print(f"accuracy after training: mean {a['mean']:.3f} (min {a['min']:.3f}, max {a['max']:.3f}); "
          f"{out['train_seconds_per_arch']:.1f} s per training; total {out['seconds']:.0f} s")
    print(f"noise ceiling: Spearman between the accuracies of two training seeds = {out['seed_to_seed_spearman']:.3f} "
          f"(mean over {out['train_seeds']} seeds' pairs); correlations below are with the mean accuracy")
    print(f"{'proxy':<10} {'spearman':>9} {'kendall':>8} {'s/arch':>8}")
    for n, r in sorted(out["correlations"].items(), key=lambda kv: -kv[1]["spearman"]):
        print(f"{n:<10} {r['spearman']:>9.3f} {r['kendall']:>8.3f} {r['seconds_per_arch']:>8.3f}")
    if out["supernet_epochs"]:
        print(f"(supernet = accuracy of the arch's path in one supernet trained {out['supernet_epochs']} epochs, "
              f"{out['supernet_train_seconds']:.0f} s, BN recalibrated per arch; s/arch is its scoring time)")
    print(f"(ensemble = mean z-score of {', '.join(out['ensemble_members'])} against a fixed reference sample)")
    if args.json:
        from nas.core.files import atomic_write_text
        atomic_write_text(args.json, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
