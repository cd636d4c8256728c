"""Supernet ranking figures on the generated `shapes` task (issue 30): ceiling, supernet vs stand-alone, vs truth.

    OMP_NUM_THREADS=1 python benchmarks/supernet_ranking.py --space nats_sss --out /tmp/rank_nats.json
    OMP_NUM_THREADS=1 python benchmarks/supernet_ranking.py --space nb201 --out /tmp/rank_nb201.json

Each run is `nas bench ranking` with its defaults (the README's settings: shapes2, 16 px, batch 64, 3 stand-alone
epochs; AdamW sandwich supernet, 4 epochs) (`nas.bench.ranking.supernet_ranking`); extra
`key=value` arguments override RankingConfig fields (e.g. supernet_epochs=12 random_paths=4). The table
printed is the one in the README section "Measuring supernet ranking".
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from nas.bench.ranking import (
    RankingConfig,
    correlate,
    format_result,
    standalone_accuracies,
    supernet_ranking,
    supernet_scores,
)
from nas.core.files import atomic_write_text
from nas.training.threads import set_torch_threads


def ranking_config(space: str, overrides: list[str]) -> RankingConfig:
    """RankingConfig of `space` with `field=value` overrides (values read as JSON, else as plain strings)."""
    fields: dict[str, Any] = {}
    for item in overrides:
        k, _, v = item.partition("=")
        try:
            fields[k] = json.loads(v)
        except ValueError:
            fields[k] = v   # a plain string, e.g. dataset=shapes:4000
    return RankingConfig(space=space, **fields)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="nats_sss", choices=("nats_sss", "nb201"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--standalone-from", default=None)
    ap.add_argument("--part", default="all", help="all (default); supernet | standalone:S (seed index S) write one "
                    "part to --out, to run the parts as parallel processes; merge:A,B,... joins part files")
    ap.add_argument("overrides", nargs="*", help="RankingConfig field=value")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    set_torch_threads(1)
    cfg = ranking_config(args.space, args.overrides)
    t0 = time.process_time()
    if args.part == "supernet":
        part = supernet_scores(cfg)
    elif args.part.startswith("standalone:"):   # standalone:S or standalone:S:I/K (archs I, I+K, ...; K=-1: reversed)
        _, seed, *share = args.part.split(":")
        i, k = (int(v) for v in share[0].split("/")) if share else (0, 1)

        def save(partial: dict) -> None:   # what is done so far (and its CPU time) survives a cut-short run
            partial = {**partial, "cpu_seconds": round(time.process_time() - t0, 1)}
            atomic_write_text(Path(args.out), json.dumps(partial, indent=1) + "\n")

        part = standalone_accuracies(cfg, [int(seed)], share=(i, k), on_net=save)
    elif args.part.startswith("merge:"):
        parts = [json.loads(Path(p).read_text()) for p in args.part.split(":", 1)[1].split(",")]
        sup = next(p for p in parts if "supernet" in p)
        cfg.check_supernet(sup.get("supernet_settings"), "merge: the supernet part")
        by_seed: dict[int, dict[str, float]] = {}   # parts of one seed may overlap (e.g. one run in reverse)
        for i, p in enumerate(parts):
            if "standalone" in p:   # every stand-alone part must have been trained with this config's protocol
                cfg.check_standalone(p.get("standalone_settings"), f"merge part {i + 1}")
        for p in (p for p in parts if "standalone" in p):
            for b, accs in p["standalone"].items():
                for s, acc in zip(p["standalone_seeds"], accs):
                    by_seed.setdefault(s, {}).setdefault(b, acc)
        seeds = sorted(by_seed)
        stand = {b: [by_seed[s][b] for s in seeds] for b in by_seed[seeds[0]] if all(b in by_seed[s] for s in seeds)}
        part = correlate(cfg, sup, stand)
        part["cpu_seconds_parts"] = [p.get("cpu_seconds") for p in parts]
    else:
        part = supernet_ranking(cfg, standalone_from=args.standalone_from)
    part["cpu_seconds"] = round(time.process_time() - t0, 1)
    atomic_write_text(Path(args.out), json.dumps(part, indent=1) + "\n")
    if "correlations" in part:
        print(format_result(part))
    print(f"cpu seconds: {part['cpu_seconds']}")


if __name__ == "__main__":
    main()
