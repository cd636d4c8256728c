"""Pilot for issue 30's ceiling: which stand-alone protocol makes two training seeds agree on the arch order?

    OMP_NUM_THREADS=1 python benchmarks/ranking_pilot.py --out pilot.json --archs 10 base:epochs=3,batch_size=64 \
        b32:epochs=3,batch_size=32

Trains `--archs` nats_sss archs (a seeded draw, `--draw-seed`, minus the archs of `nas bench ranking`'s own
`--exclude-archs`-arch draw, so the confirmation runs on other archs) from scratch with 2 seeds under each named
variant (`name:key=value,...`, keys: epochs, batch_size, lr, dataset, and `train_eval`'s warmup (epochs),
clip_grad, ema, label_smoothing), interleaved arch by arch so a cut-short run
compares the variants on the same archs. Each net is scored on the dataset's own val split and on a larger
held-out set (`--big-val` images of the same generator's val stream). Per variant and val set it reports the
seed-vs-seed Kendall / Spearman, the seed-noise standard deviation (sd of the seed difference / sqrt 2), the
arch-to-arch spread (sd of the seed means) and their ratio. The JSON (`--out`) is rewritten after every net.
`--blocks A,B,...` trains the given archs instead of the draw (to re-examine archs whose seeds disagreed).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from nas.core.files import atomic_write_text
from nas.training.threads import set_torch_threads

log = logging.getLogger("ranking_pilot")
KEYS = {"epochs": int, "batch_size": int, "lr": float, "dataset": str, "warmup": float, "clip_grad": float,
        "ema": float, "label_smoothing": float}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = text.partition(":")
    fields: dict[str, Any] = {"epochs": 3, "batch_size": 64, "lr": 3e-3, "dataset": "shapes3:2000", "warmup": 0.0,
                              "clip_grad": 0.0, "ema": 0.0, "label_smoothing": 0.0}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        if k not in KEYS:
            raise SystemExit(f"variant {text!r}: unknown key {k!r}; valid keys: {', '.join(KEYS)}")
        fields[k] = KEYS[k](v)
    return name, fields


def stats(accs: dict[str, list[float]]) -> dict[str, float]:
    """Seed-vs-seed Kendall / Spearman and seed noise vs arch spread (`nas.bench.ranking.seed_noise`)."""
    from nas.bench.ranking import rank_stats, seed_noise
    done = {b: v for b, v in accs.items() if len(v) == 2}
    if len(done) < 3:
        return {"n": len(done)}
    r = rank_stats([v[0] for v in done.values()], [v[1] for v in done.values()])
    return {"kendall": r["kendall"], "spearman": r["spearman"]} | seed_noise(done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--archs", type=int, default=10)
    ap.add_argument("--draw-seed", type=int, default=101)
    ap.add_argument("--exclude-archs", type=int, default=50)
    ap.add_argument("--big-val", type=int, default=5000)
    ap.add_argument("--blocks", help="comma-separated archs instead of the draw (to re-examine given archs)")
    ap.add_argument("variants", nargs="+")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_torch_threads(1)
    import torch

    from nas.bench.proxies import _truth
    from nas.bench.ranking import RankingConfig, _train_space
    from nas.core.arch import Arch
    from nas.training.data import load_dataset
    from nas.training.loops import evaluate, train_eval

    variants = dict(parse_variant(v) for v in args.variants)
    cfg = RankingConfig(space="nats_sss")
    excluded, _ = _truth("nats_sss", "cifar10", args.exclude_archs, cfg.seed)
    pool, _ = _truth("nats_sss", "cifar10", args.archs + args.exclude_archs, args.draw_seed)
    blocks = sorted(b for b in pool if b not in excluded)[:args.archs]
    if args.blocks:
        blocks = args.blocks.split(",")
    space = _train_space(cfg, 10)
    res = space.input_shape[-1]
    data: dict[str, Any] = {}
    bigs: dict[str, Any] = {}
    out: dict[str, Any] = {"archs": blocks, "variants": variants, "big_val": args.big_val, "accs": {}, "cpu": {}}
    t_start = time.process_time()
    for b in blocks:
        arch = space.validate(Arch(space.name, space.parse(b).genes))
        for name, v in variants.items():
            if v["dataset"] not in data:
                data[v["dataset"]] = (load_dataset(v["dataset"], split="train", seed=cfg.seed, resolution=res),
                                      load_dataset(v["dataset"], split="val", seed=cfg.seed, resolution=res))
            train, val = data[v["dataset"]]
            kind = v["dataset"].split(":")[0]
            if kind not in bigs:
                bigs[kind] = load_dataset(f"{kind}:{2 * args.big_val}", split="val", seed=cfg.seed, resolution=res)
            big = bigs[kind]
            for s in range(2):
                t0 = time.process_time()
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed * 1000 + s)
                    model = space.build(arch)
                r = train_eval(model, train, val, epochs=v["epochs"], batch_size=v["batch_size"], lr=v["lr"],
                               seed=cfg.seed * 1000 + s, progress=False, optimizer="adamw", warmup=v["warmup"],
                               clip_grad=v["clip_grad"], ema=v["ema"], label_smoothing=v["label_smoothing"])
                acc_big, _ = evaluate(model, big)
                with torch.no_grad():
                    model.eval()
                    pred = torch.cat([model(big[0][i:i + 500]).argmax(1) for i in range(0, len(big[1]), 500)])
                per_class = [round(float((pred[big[1] == c] == c).float().mean()), 3) for c in range(10)]
                out.setdefault("per_class", {}).setdefault(name, {}).setdefault(b, []).append(per_class)
                acc = out["accs"].setdefault(name, {"val": {}, "big": {}})
                acc["val"].setdefault(b, []).append(float(r["accuracy"]))
                acc["big"].setdefault(b, []).append(float(acc_big))
                out["cpu"][name] = round(out["cpu"].get(name, 0.0) + time.process_time() - t0, 1)
                log.info("%s %s seed %d: val %.3f big %.3f per class %s", name, b, s, r["accuracy"], acc_big, per_class)
            out["stats"] = {n: {k: stats(a[k]) for k in ("val", "big")} for n, a in out["accs"].items()}
            out["cpu_seconds"] = round(time.process_time() - t_start, 1)
            atomic_write_text(Path(args.out), json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["stats"], indent=1))
    print(f"cpu seconds: {out['cpu_seconds']} ({out['cpu']})")


if __name__ == "__main__":
    main()
