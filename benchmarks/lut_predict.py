"""LUT latency prediction throughput: vectorised gather vs per-arch loop, side by side.

    python benchmarks/lut_predict.py [--target cpu] [--n 200000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from latency.targets import lut_model
from search_spaces.catalog import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--target", default="cpu")
    ap.add_argument("--space", default="mbconv")
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    space = get_space(args.space)
    model = lut_model(args.target, space)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(2000)]
    codes = np.stack([space.encode(a) for a in archs])
    codes = codes[rng.integers(len(codes), size=args.n)]

    t = time.perf_counter()
    vec = model.predict_codes(codes)
    t_vec = time.perf_counter() - t
    t = time.perf_counter()
    loop = np.array([model.predict(a) for a in archs])
    t_loop = (time.perf_counter() - t) / len(archs) * args.n
    np.testing.assert_allclose(model.predict_codes(codes[:0]), [])
    np.testing.assert_allclose(model.predict_many(archs), loop, rtol=1e-12)
    print(f"space={args.space} target={args.target} archs={args.n}")
    print(f"vectorised : {args.n / t_vec:12,.0f} archs/s")
    print(f"per-arch   : {args.n / t_loop:12,.0f} archs/s")
    print(f"ratio      : {t_loop / t_vec:12.1f}x")
    print(f"check      : mean {vec.mean():.3f} ms over the batch")


if __name__ == "__main__":
    main()
