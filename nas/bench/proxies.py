"""`nas bench proxies`: how well each zero-cost proxy ranks archs against benchmark ground truth.

    nas bench proxies --space nb201 --truth cifar10 [--dataset DATA] [--archs N] [--proxies a,b] [--json]
    nas bench proxies --space nasnet -o variant=darts --truth nb301 [--archs N] ...

Scores archs that have ground truth (nb201: NASLib's 725-arch subset of `--truth`; nats_sss: a
seeded sample of the 32,768 archs, CIFAR-10; nasnet -o variant=darts: NASLib's 725 NAS-Bench-301 cells,
CIFAR-10, scored on the net NASLib scored them on: 32 channels, 8 cells) with every proxy of `nas.evaluators.proxies` (and the
`ensemble` of the zero-cost evaluator when all its members are scored), on one seeded batch of
`--dataset` (default: the embedded `digits`, upscaled - no CIFAR images ship; pass `cifar10:PATH`
when you have them; `synthetic` means Gaussian noise). Reports per proxy the Spearman and Kendall
correlation with the ground-truth accuracy; for nb201 also NASLib's own scores against the same truth
and, for the data-free proxies (synflow, params, flops), the per-arch Spearman between our value
and NASLib's (do we compute the same thing?); for nb301 a `params_naslib` row counts parameters as NASLib
does (no BatchNorm weights inside the cell ops), equal to NASLib's `params` arch by arch. Our `flops` proxy is MACs (conv and linear
multiply-accumulates, every space); for nb201 a `flops_naslib` row adds FLOPs in the convention of
NASLib's `flops` score (BN, ReLU and pooling counted too), equal to it arch by arch.

Published anchors (Abdelfattah et al., ICLR 2021, Table 1; all 15,625 NB201 archs, CIFAR-10):
synflow 0.74, jacob_cov 0.73, snip 0.60, grad_norm 0.59, fisher 0.36, vote 0.82. Claims of the newer
proxies: MeCo 0.89 on NB201 CIFAR-10 (Jiang et al., NeurIPS 2023, abstract), SWAP 0.90 on NB201
CIFAR-100 for its size-regularised score (Peng et al., ICLR 2024, abstract; our `swap` row is the
unregularised score, `swap_reg` the regularised one with a target size chosen without the truth).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

import numpy as np

from nas.core.errors import UsageError

log = logging.getLogger(__name__)
#: the row of SWAP's size-regularised score (`_swap_reg_row`), added whenever `swap` is scored
SWAP_REG = "swap_reg"
#: Abdelfattah et al. 2021, Table 1 (NAS-Bench-201, CIFAR-10, Spearman over all 15,625 archs)
PUBLISHED_SPEARMAN: dict[str, float] = {"synflow": 0.74, "jacob_cov": 0.73, "snip": 0.60, "grad_norm": 0.59,
                                        "fisher": 0.36, "ensemble": 0.82}
#: (space, truth) -> proxy -> the Spearman its paper claims there (MeCo: NeurIPS 2023 abstract, NATS-TSS =
#: NB201, CIFAR-10; SWAP: ICLR 2024 abstract, regularised score, NB201 CIFAR-100)
CLAIMED_SPEARMAN: dict[tuple[str, str], dict[str, float]] = {
    ("nb201", "cifar10"): {**PUBLISHED_SPEARMAN, "meco": 0.89},
    ("nb201", "cifar100"): {"swap": 0.90}}
#: spaces with ground truth -> their truth columns
TRUTHS: dict[str, tuple[str, ...]] = {"nb201": ("cifar10", "cifar100", "ImageNet16-120"), "nats_sss": ("cifar10",),
                                      "nasnet": ("nb301",)}
#: our proxy -> NASLib's score name for the same idea (NASLib's `jacov` and `nwot` are other variants)
NASLIB_NAMES: dict[str, str] = {"synflow": "synflow", "params": "params", "flops": "flops", "snip": "snip",
                                "grad_norm": "grad_norm", "fisher": "fisher", "jacob_cov": "jacov", "naswot": "nwot"}
DATA_FREE: tuple[str, ...] = ("synflow", "params", "flops")
#: nb201 row beside `flops` (our MACs): FLOPs in the convention of NASLib's `flops` score
NASLIB_FLOPS = "flops_naslib"
#: nb301 row beside `params`: parameters counted as NASLib counts them
NASLIB_PARAMS = "params_naslib"
#: benchmark dataset -> (classes, resolution) of its nets
NB201_NETS: dict[str, tuple[int, int]] = {"cifar10": (10, 32), "cifar100": (100, 32), "ImageNet16-120": (120, 16)}


def _rank_stats(x: Sequence[float], y: Sequence[float]) -> dict[str, float]:
    from scipy import stats
    a, b = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return {"spearman": math.nan, "kendall": math.nan, "n": int(ok.sum())}
    return {"spearman": float(stats.spearmanr(a[ok], b[ok])[0]), "kendall": float(stats.kendalltau(a[ok], b[ok])[0]),
            "n": int(ok.sum())}


def _truth(space_name: str, truth: str, archs: int | None, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Block string -> accuracy for the archs to score, and NASLib's records (nb201, nb301) or {}."""
    from nas.evaluators.tabular import truth_table
    records: dict[str, Any] = {}
    if space_name == "nasnet":
        from search_spaces.bench_data import nb301_records
        records = nb301_records()
        table = {b: r.val_accuracy for b, r in records.items()}
    else:
        table = truth_table(space_name, truth)
    if space_name == "nb201":
        from search_spaces.bench_data import nb201_records
        records = nb201_records(truth)
    blocks = sorted(table)
    if archs is not None:
        if archs < 3:
            raise UsageError(f"--archs must be at least 3, got {archs}")
        rng = np.random.default_rng(seed)
        blocks = sorted(rng.choice(blocks, size=min(archs, len(blocks)), replace=False).tolist())
    elif space_name == "nats_sss":
        raise UsageError("nats_sss has 32,768 archs: give --archs N to score a seeded sample")
    return {b: table[b] for b in blocks}, records


def _bench_space(space_name: str, truth: str, options: dict[str, Any] | None) -> Any:
    """The space whose nets are scored: the benchmark's own net size (nb301: NASLib's 32 channels, 8 cells)."""
    from search_spaces.bench_data import NB301_NET
    from search_spaces.catalog import get_space
    if space_name not in TRUTHS:
        raise UsageError(f"no ground truth for space {space_name!r}; valid spaces: {', '.join(TRUTHS)}")
    if truth not in TRUTHS[space_name]:
        raise UsageError(f"no {space_name} ground truth for dataset {truth!r}; valid datasets: "
                         f"{', '.join(TRUTHS[space_name])}")
    options = dict(options or {})
    if space_name == "nasnet":
        if options.get("variant") != "darts":
            raise UsageError(f"nb301 truth holds DARTS cells: give -o variant=darts (got variant="
                             f"{options.get('variant', 'nasnet')!r})")
        return get_space("nasnet", **{**NB301_NET, **options})
    if options:
        raise UsageError(f"bench proxies takes no space options for {space_name} (got {', '.join(options)})")
    classes, res = NB201_NETS.get(truth, (10, 32))
    return get_space(space_name, num_classes=classes, resolution=res)


def proxy_ranking(space_name: str, truth: str = "cifar10", dataset: str | None = "digits", archs: int | None = None,
                  proxies: Sequence[str] | None = None, batch: int = 16, seed: int = 0,
                  progress: bool = False, space_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rank correlations of zero-cost proxies with ground truth (see the module docstring)."""
    from nas.evaluators.proxies import PROXIES
    from nas.evaluators.zero_cost import DEFAULT_MEMBERS, ENSEMBLE, NOISE, ZeroCostEvaluator

    space = _bench_space(space_name, truth, space_options)
    names = list(proxies) if proxies else PROXIES.names()
    for n in names:
        if n not in PROXIES:
            raise UsageError(f"unknown zero-cost proxy {n!r}; valid proxies: {', '.join(PROXIES.names())}")
    table, records = _truth(space_name, truth, archs, seed)
    data = dataset if dataset and dataset != "synthetic" else None   # None: Gaussian noise
    ev = ZeroCostEvaluator(space, seed=seed, proxy=ENSEMBLE, batch=batch, resolution=None, dataset=data or NOISE)
    with_ensemble = set(DEFAULT_MEMBERS) <= set(names)
    values: dict[str, list[float]] = {n: [] for n in names + ([ENSEMBLE] if with_ensemble else [])}
    seconds = {n: 0.0 for n in names}
    blocks = list(table)
    it: Any = blocks
    if progress:
        from tqdm import tqdm
        it = tqdm(blocks, desc=f"proxies on {space_name}", unit="arch")
    for block in it:
        arch = space.parse(block)
        row: dict[str, float] = {}
        for n in names:
            t0 = time.perf_counter()
            row.update(ev.proxies(arch, [n]))
            seconds[n] += time.perf_counter() - t0
        for n in names:
            values[n].append(row[n])
        if with_ensemble:
            values[ENSEMBLE].append(ev.ensemble_score(row))
    acc = [table[b] for b in blocks]
    out: dict[str, Any] = {
        "space": space_name, "truth": truth, "archs": len(blocks), "seed": seed, "batch": batch,
        "data": (f"{dataset} (real images)" if data and not data.startswith("digits") else
                 "digits (embedded 8x8 grayscale digits, upscaled; not CIFAR)" if data else
                 "synthetic (Gaussian noise, random labels)"),
        "proxies": {}, "naslib": {}, "published_spearman": CLAIMED_SPEARMAN.get((space_name, truth), {}),
        "space_options": space.options()}
    for n, v in values.items():
        entry = _rank_stats(v, acc)
        if n in seconds:
            entry["seconds_per_arch"] = seconds[n] / max(1, len(blocks))
        if records and n in DATA_FREE:
            theirs = [records[b].scores.get(NASLIB_NAMES[n], math.nan) for b in blocks]
            entry["spearman_vs_naslib_score"] = _rank_stats(v, theirs)["spearman"]
        out["proxies"][n] = entry
    if "swap" in names:
        out["proxies"][SWAP_REG] = _swap_reg_row(space, blocks, values["swap"], acc)
    if records and "flops" in names and space_name == "nb201":
        out["proxies"][NASLIB_FLOPS] = _naslib_flops_row(space, blocks, acc, records)
    if records and "params" in names and space_name == "nasnet":
        out["proxies"][NASLIB_PARAMS] = _naslib_params_row(space, blocks, acc, records)
    if records:
        from search_spaces.bench_data import ZC_PROXIES
        for theirs in ZC_PROXIES:   # NASLib's 12 scores, also those we have no counterpart of
            out["naslib"][theirs] = _rank_stats([records[b].scores.get(theirs, math.nan) for b in blocks], acc)
    return out


def _swap_reg_row(space: Any, blocks: Sequence[str], swap: Sequence[float], acc: Sequence[float]) -> dict[str, Any]:
    """SWAP's size-regularised score (`swap_regularised`), with a target size chosen without the truth:
    mu = the largest parameter count among the scored archs (M), sigma = the variance of their counts
    (the paper tunes mu and sigma per space; its values are not reproduced here)."""
    from nas.evaluators.proxies import swap_regularised
    from search_spaces.op_params import arch_params
    sizes = [arch_params(space, space.parse(b)) / 1e6 for b in blocks]
    mu, sigma = max(sizes), float(np.var(sizes)) or 1.0
    entry = _rank_stats([swap_regularised(v, p, mu, sigma) for v, p in zip(swap, sizes)], acc)
    entry.update({"mu": mu, "sigma": sigma})
    return entry


def _naslib_flops_row(space: Any, blocks: Sequence[str], acc: Sequence[float], records: dict[str, Any]
                      ) -> dict[str, Any]:
    """nb201 FLOPs in NASLib's convention (`search_spaces.nb201_ops.naslib_flops`: MACs plus BN, ReLU and
    pooling terms) beside our `flops` proxy (MACs): ranked against the truth and matched to NASLib's
    `flops` score arch by arch (`equal_to_naslib`: archs whose count equals NASLib's, in whole FLOPs)."""
    from search_spaces.nb201_ops import naslib_flops
    ours = [naslib_flops(space.layers(space.parse(b))) for b in blocks]
    theirs = [records[b].scores.get("flops", math.nan) for b in blocks]
    entry = _rank_stats(ours, acc)
    entry["spearman_vs_naslib_score"] = _rank_stats(ours, theirs)["spearman"]
    entry["equal_to_naslib"] = sum(o == round(t * 1e6) for o, t in zip(ours, theirs) if math.isfinite(t))
    return entry


def _naslib_params_row(space: Any, blocks: Sequence[str], acc: Sequence[float], records: dict[str, Any]
                       ) -> dict[str, Any]:
    """nb301 parameters counted as NASLib counts them (`bench_data.nb301_naslib_params`) beside our
    `params` proxy: ranked against the truth and matched to NASLib's `params` score arch by arch."""
    from search_spaces.bench_data import nb301_naslib_params
    ours = [nb301_naslib_params(space, space.parse(b)) for b in blocks]
    theirs = [records[b].scores.get("params", math.nan) for b in blocks]
    entry = _rank_stats(ours, acc)
    entry["spearman_vs_naslib_score"] = _rank_stats(ours, theirs)["spearman"]
    entry["equal_to_naslib"] = sum(o == round(t * 1e6) for o, t in zip(ours, theirs) if math.isfinite(t))
    return entry


def format_ranking(result: dict[str, Any]) -> str:
    lines = [f"{result['space']} vs {result['truth']} ground truth, {result['archs']} archs; data: {result['data']}",
             f"{'proxy':<12} {'spearman':>9} {'kendall':>8} {'NASLib':>8} {'publ.':>6} {'ours~NASLib':>11} "
             f"{'s/arch':>7}"]
    for n, e in result["proxies"].items():
        theirs = {NASLIB_FLOPS: "flops", NASLIB_PARAMS: "params"}.get(n, NASLIB_NAMES.get(n, ""))
        nl = result["naslib"].get(theirs, {}).get("spearman", math.nan)
        pub = result["published_spearman"].get(n, math.nan)
        lines.append(f"{n:<12} {e['spearman']:>9.3f} {e['kendall']:>8.3f} {nl:>8.3f} {pub:>6.2f} "
                     f"{e.get('spearman_vs_naslib_score', math.nan):>11.3f} {e.get('seconds_per_arch', 0.0):>7.3f}"
                     + (f"  (= NASLib's on {e['equal_to_naslib']} of {e['n']})" if "equal_to_naslib" in e else "")
                     + (f"  (mu {e['mu']:.3g}M, sigma {e['sigma']:.3g})" if "mu" in e else ""))
    mine = {NASLIB_NAMES.get(n, n) for n in result["proxies"]} | {"flops", "params"}
    other = [f"{k} {v['spearman']:.3f}" for k, v in result["naslib"].items() if k not in mine]
    if other:
        lines.append("NASLib's other scores, same archs: " + ", ".join(other))
    return "\n".join(lines)
