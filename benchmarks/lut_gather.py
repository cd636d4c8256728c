"""The LUT model's batch path (`LUTModel.predict_codes`) against a plain numpy gather, side by side.

    python benchmarks/lut_gather.py [--space mbconv] [--target cpu] [--n 200000] [--repeats 7]

The same N encoded archs (choice indices, N x decisions) are priced three ways, each `--repeats` times
in turn (so machine load hits them alike), timed in process CPU seconds, median reported:

- `predict_codes`: what the search calls (`latency.model.LUTModel`);
- `numpy gather`: the table flattened once, `flat[codes + row offsets].sum(axis=1) + const`, the
  plainest numpy form of the same sum;
- `per-arch predict`: `LUTModel.predict` on Arch objects (the feasibility check's path), on 2,000 archs
  scaled to N.

It checks that the three agree (to 1e-9 ms) and prints archs per CPU-second and the ratio
predict_codes / gather (the aim: under 2x).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # this checkout's nas


def main(argv: list[str] | None = None) -> int:
    from latency.targets import lut_model
    from search_spaces.catalog import get_space
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="mbconv")
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    space = get_space(args.space)
    model = lut_model(args.target, space, False)
    if not model.separable:
        print(f"{args.space} on {args.target}: the model is not separable (no table to gather from)")
        return 1
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(2000)]
    codes = np.stack([space.encode(a) for a in archs])[rng.integers(2000, size=args.n)]
    matrix = np.where(np.isfinite(model._matrix), model._matrix, 0.0)
    flat, offsets, const = matrix.ravel(), np.arange(matrix.shape[0]) * matrix.shape[1], model._const

    def gather() -> np.ndarray:
        return flat[codes + offsets].sum(axis=1) + const

    def lut() -> np.ndarray:
        return model.predict_codes(codes)

    def per_arch() -> np.ndarray:
        return np.array([model.predict(a) for a in archs])

    want = gather()
    np.testing.assert_allclose(lut(), want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(per_arch(), model.predict_codes(np.stack([space.encode(a) for a in archs])),
                               rtol=0, atol=1e-9)
    spent: dict[str, list[float]] = {"predict_codes": [], "numpy gather": [], "per-arch predict": []}
    for _ in range(args.repeats):
        for name, fn, scale in (("predict_codes", lut, 1.0), ("numpy gather", gather, 1.0),
                                ("per-arch predict", per_arch, args.n / len(archs))):
            t = time.process_time()
            fn()
            spent[name].append((time.process_time() - t) * scale)
    med = {k: float(np.median(v)) for k, v in spent.items()}
    print(f"space={args.space} target={args.target} archs={args.n} decisions={codes.shape[1]} "
          f"(median of {args.repeats}, CPU seconds)")
    for name, s in med.items():
        print(f"{name:<17} {args.n / s:>14,.0f} archs per CPU-s")
    print(f"predict_codes / gather CPU: {med['predict_codes'] / med['numpy gather']:.2f}x (aim: under 2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
