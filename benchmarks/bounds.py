"""Found latency at two bounds and accuracy after a short retrain, for the weight-sharing pairs.

    python benchmarks/bounds.py [--dataset digits] [--retrain-epochs 2] [--pairs nasnet:supernet,...]

Each pair (space case of tests/test_matrix.py : strategy) is searched twice with `run_pair`, at a
tight and a loose bound: ``fastest + f x (median - fastest)`` for f = 0.3 and 2.0, where `fastest`
is the table's lowest latency and `median` the median of 50 seeded samples. The found net (the
searched tiny space options) is then trained from scratch for `--retrain-epochs` on `--dataset`
(`nas.api.train`) and its held-out accuracy reported.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ("nasnet:supernet,nasnet-darts:supernet,mbconv:differentiable,nasnet:differentiable,"
         "nasnet-darts:differentiable,hytra:differentiable,vit_resnas:differentiable")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--retrain-epochs", type=int, default=2)
    ap.add_argument("--pairs", default=PAIRS)
    ap.add_argument("--factors", default="0.3,2.0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from benchmarks.matrix import _matrix_module
    from latency.devices.pixel1 import build_table
    from latency.model import LUTModel
    from nas.api import train
    from nas.training.threads import set_torch_threads
    from search_spaces.catalog import get_space
    set_torch_threads(None)
    m = _matrix_module()
    out = Path(args.out or tempfile.mkdtemp(prefix="bounds-"))
    for pair in args.pairs.split(","):
        case, strategy = pair.split(":")
        family = next(f for f, members in m.FAMILIES.items() if strategy in members)
        name, opts = m.SPACE_CASES[case]
        space = get_space(name, **opts)
        lut = LUTModel(space, build_table(space))
        lo = lut.min_ms()
        med = float(np.median([lut.predict(space.sample(np.random.default_rng(i))) for i in range(50)]))
        for f in (float(x) for x in args.factors.split(",")):
            bound = lo + f * (med - lo)
            where = out / f"{case}-{strategy}-{f}"
            s = m.run_pair(case, family, where, dataset=args.dataset, trials=3, bound_ms=bound, strategy=strategy)
            res = train(str(where / "run" / "best.json"), dataset=args.dataset, epochs=args.retrain_epochs,
                        out=str(where / "retrain"), progress=False)
            row = {"space": case, "strategy": strategy, "bound_ms": round(bound, 3), "latency_ms": round(s["latency_ms"], 3),
                   "search_s": round(s["seconds_wall"], 1), "score": s["metrics"].get("score"),
                   "retrain_acc": round(float(res.accuracy), 4), "retrain_epochs": args.retrain_epochs,
                   "repaired": (s.get("training") or {}).get("repaired")}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
