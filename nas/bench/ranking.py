"""`nas bench ranking`: does a trained supernet rank archs as stand-alone training and ground truth do?

    nas bench ranking --space nats_sss|nb201 [--dataset shapes] [--truth cifar10] [--archs 50] ...
    nas bench ranking --space nasnet -o variant=darts --truth nb301 --dataset cifar10:PATH ...

For `archs` seeded archs that have ground truth (`nas.bench.proxies`' tables: NATS-Bench size space,
NASLib's NB201 subset, NB301's 725 DARTS cells) it

1. trains the space's supernet (`nas.supernet.trainer.train_supernet`: sandwich rule + in-place
   distillation for nats_sss, uniform single paths for the cell spaces) on `dataset` at the proxy
   size (`resolution`, and for the cell spaces `channels` / `cells`);
2. scores every arch by its inherited weights after BN recalibration (`SupernetEvaluator`);
3. trains every arch stand-alone from scratch with `seeds` seeds on the same data and size
   (`nas.training.loops.train_eval`, AdamW, cosine decay; optional LR warm-up, gradient clipping, weight
   EMA and label smoothing: `standalone_warmup`, `clip_grad`, `ema`, `label_smoothing`, all off by default);
4. reports Kendall tau and Spearman rho of: stand-alone seed i vs seed j (the *ceiling*: no scorer
   can agree with stand-alone training better than training agrees with itself), supernet vs the
   stand-alone mean, supernet vs ground truth, stand-alone mean vs ground truth, and the parameter
   count vs both (a free baseline).

Costs: `archs * seeds` stand-alone trainings dominate (at the defaults on one CPU core about 7-45 s
each for nats_sss, 20 s on average). `standalone_from` reuses the stand-alone accuracies of an earlier result with the
same archs and stand-alone settings (to try supernet settings without retraining the references).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` builds this parser (issue 29)

from nas.core.errors import UsageError

log = logging.getLogger(__name__)

#: spaces with a supernet and ground truth, and their default truth
SPACES: dict[str, str] = {"nats_sss": "cifar10", "nb201": "cifar10", "nasnet": "nb301"}
#: published anchor (BossNAS, Li et al. ICCV 2021, Table 6: supernet ranking on the NATS size space, CIFAR-100)
PUBLISHED = {"bossnas_nats_sss_cifar100_spearman": 0.76}
#: bounds of every numeric option: name -> (low, high)
BOUNDS: dict[str, tuple[float, float]] = {
    "archs": (10, 1000), "seeds": (2, 5), "epochs": (1, 100), "supernet_epochs": (1, 200), "resolution": (8, 64),
    "batch_size": (2, 512), "lr": (1e-6, 1.0), "supernet_lr": (1e-6, 1.0), "random_paths": (0, 16),
    "calib_batches": (1, 64), "warmup": (0, 100_000), "channels": (1, 64), "cells": (1, 5), "seed": (0, 2 ** 31 - 1),
    "standalone_warmup": (0, 100), "clip_grad": (0, 100), "ema": (0, 0.9999), "label_smoothing": (0, 0.5),
    "supernet_seed": (0, 2 ** 31 - 1)}
#: bounded fields that may be None (None: `seed`)
OPTIONAL = ("supernet_seed",)
#: the stand-alone protocol options added after results were first saved, at the values those results used
#: (a saved result without them was trained with these)
LEGACY_STANDALONE = {"standalone_warmup": 0.0, "clip_grad": 0.0, "ema": 0.0, "label_smoothing": 0.0}


#: the supernet's defaults per space: (epochs, sampling; None = the supernet's own). nb201: over 4 supernet
#: seeds on the 50-arch draw (README) uniform single paths for 4 epochs ranked the CIFAR-10 truth at -0.227
#: Kendall, FairNAS 8 epochs at +0.241 (paired t, Holm over 6 tests: p 0.020)
SUPERNET_DEFAULTS: dict[str, tuple[int, str | None]] = {"nats_sss": (4, None), "nb201": (8, "fair"), "nasnet": (4, None)}


@dataclass(frozen=True)
class RankingConfig:
    space: str = "nats_sss"
    truth: str | None = None            # None: the space's default (SPACES)
    dataset: str = "shapes2"            # version 2 of the generated task (shapes3 was not shown better: README)
    archs: int = 50
    seeds: int = 2                      # stand-alone training seeds (the ceiling needs two)
    epochs: int = 3                     # stand-alone epochs
    lr: float = 3e-3                    # stand-alone AdamW learning rate
    standalone_warmup: float = 0.0      # stand-alone linear LR warm-up, epochs (0: none)
    clip_grad: float = 0.0              # stand-alone gradient-norm clipping (0: off)
    ema: float = 0.0                    # stand-alone: decay of the weight EMA evaluated (0: off)
    label_smoothing: float = 0.0        # stand-alone cross-entropy label smoothing
    supernet_epochs: int | None = None  # None: SUPERNET_DEFAULTS of the space
    supernet_lr: float = 3e-3           # the supernet trainer's learning rate
    supernet_optimizer: str = "adamw"   # sgd (Nesterov) | adamw; with SGD 0.05 the supernets stayed at chance
    sampling: str | None = None         # sandwich | uniform | fair; None: SUPERNET_DEFAULTS, else the supernet's own
    warmup: int = 10                    # supernet warm-up steps
    random_paths: int = 2
    distill: bool = True
    batch_size: int = 64
    resolution: int = 16
    channels: int = 8                   # cell spaces (nb201, nasnet): proxy width and cells per stage
    cells: int = 1
    calib_batches: int = 8
    seed: int = 0
    supernet_seed: int | None = None    # the supernet's init, path draws and calibration; None: `seed` (which
    #                                     also draws the archs and the data, so it cannot vary alone)
    space_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise UsageError(f"no supernet ranking for space {self.space!r}; valid spaces: {', '.join(SPACES)}")
        from nas.supernet.sampling import OPTIMIZERS, SAMPLINGS
        epochs, sampling = SUPERNET_DEFAULTS[self.space]
        if self.supernet_epochs is None:   # resolved here, so results record what ran
            object.__setattr__(self, "supernet_epochs", epochs)
        if self.sampling is None and sampling is not None:
            object.__setattr__(self, "sampling", sampling)
        if self.supernet_optimizer not in OPTIMIZERS:
            raise UsageError(f"--supernet-optimizer {self.supernet_optimizer!r}: valid optimizers: {', '.join(OPTIMIZERS)}")
        if self.sampling is not None and self.sampling not in SAMPLINGS:
            raise UsageError(f"--sampling {self.sampling!r}: valid samplings: {', '.join(SAMPLINGS)}")
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise UsageError(f"--{name.replace('_', '-')} {value!r} is outside [{_bound(low)}, {_bound(high)}]")

    @property
    def truth_name(self) -> str:
        return self.truth or SPACES[self.space]

    def standalone_settings(self) -> dict[str, Any]:
        """What stand-alone accuracies depend on, as saved in JSON (a merge or reuse checks a saved result
        against it)."""
        return json.loads(json.dumps({k: getattr(self, k) for k in (
            "space", "dataset", "epochs", "lr", "batch_size", "resolution", "channels", "cells", "seed",
            *LEGACY_STANDALONE)} | {"space_options": self.space_options}))

    def supernet_settings(self) -> dict[str, Any]:
        """What a supernet part depends on (a merge checks a saved part against it)."""
        return json.loads(json.dumps({k: getattr(self, k) for k in (
            "space", "dataset", "supernet_epochs", "supernet_lr", "supernet_optimizer", "sampling", "warmup",
            "random_paths", "distill", "batch_size", "resolution", "channels", "cells", "calib_batches", "seed",
            "supernet_seed")} | {"space_options": self.space_options}))

    def check_supernet(self, saved: Any, what: str) -> None:
        """UsageError unless `saved` (a supernet part's "supernet_settings") is this config's; parts saved
        before parts recorded them (None) pass unchecked."""
        if saved is not None:
            _refuse_other("supernet", saved, self.supernet_settings(), what)

    def check_standalone(self, saved: Any, what: str) -> None:
        """UsageError unless `saved` (a result's "standalone_settings") is this config's stand-alone protocol;
        options missing from `saved` (results saved before they existed) count at their LEGACY_STANDALONE values."""
        old = {**LEGACY_STANDALONE, **saved} if isinstance(saved, dict) else saved
        _refuse_other("stand-alone", old, self.standalone_settings(), what)


def _bound(v: float) -> str:
    """A bound as written: integers in full (2147483647, not 2.14748e+09)."""
    return str(v) if isinstance(v, int) else f"{v:g}"


def _refuse_other(kind: str, saved: Any, new: dict[str, Any], what: str) -> None:
    """UsageError naming the fields where `saved` settings (of a part or result) differ from this run's `new`."""
    if saved == new:
        return
    got = saved if isinstance(saved, dict) else {}   # none recorded: every field differs
    diff = sorted(k for k in new if got.get(k) != new[k])
    raise UsageError(f"{what}: its {kind} settings differ from this run's in {', '.join(diff)} "
                     f"({', '.join(f'{k}={got.get(k)!r} vs {new[k]!r}' for k in diff)})")


def rank_stats(x: Any, y: Any) -> dict[str, float]:
    """Kendall tau-b and Spearman rho of two score lists (NaNs dropped)."""
    from nas.bench.proxies import _rank_stats
    return _rank_stats(list(x), list(y))


def seed_noise(stand: dict[str, list[float]]) -> dict[str, float]:
    """Why seeds disagree, in accuracy points: `noise_sd`, the standard deviation of one seed's accuracy about
    the arch's mean (the sd of seed 0 minus seed 1 over sqrt 2), against `spread_sd`, the standard deviation of
    the archs' mean accuracies. Kendall between seeds rises with spread_sd / noise_sd."""
    both = [v[:2] for v in stand.values() if len(v) >= 2]
    if len(both) < 3:
        raise UsageError(f"seed noise needs at least 3 archs with 2 seeds, got {len(both)}")
    a = np.asarray(both, dtype=float) * 100
    noise = float(np.std(a[:, 0] - a[:, 1], ddof=1) / math.sqrt(2))
    spread = float(np.std(a.mean(axis=1), ddof=1))
    return {"noise_sd": noise, "spread_sd": spread, "spread_over_noise": spread / noise if noise else math.inf,
            "n": len(both)}


def _train_space(cfg: RankingConfig, classes: int) -> Any:
    from nas.bench.proxies import _bench_space
    from nas.supernet import training_space
    space = _bench_space(cfg.space, cfg.truth_name, cfg.space_options)
    return training_space(space, resolution=cfg.resolution, num_classes=classes,
                          **({"channels": cfg.channels, "cells": cfg.cells} if cfg.space != "nats_sss" else {}))


def _archs(cfg: RankingConfig) -> tuple[list[str], dict[str, float]]:
    from nas.bench.proxies import _truth
    table, _ = _truth(cfg.space, cfg.truth_name, cfg.archs, cfg.seed)
    if len(table) < cfg.archs:
        raise UsageError(f"--archs {cfg.archs}: only {len(table)} {cfg.space} archs have {cfg.truth_name} truth")
    return sorted(table), table


def _standalone_reuse(path: str, cfg: RankingConfig, blocks: list[str]) -> dict[str, list[float]]:
    p = Path(path)
    try:
        old = json.loads(p.read_text())
        sa = old["standalone"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--standalone-from {path}: not a ranking result ({type(exc).__name__}: {exc})") from None
    cfg.check_standalone(old.get("standalone_settings"), f"--standalone-from {path}")
    if sorted(sa) != blocks or any(len(v) < cfg.seeds for v in sa.values()):
        raise UsageError(f"--standalone-from {path}: holds other archs or fewer than {cfg.seeds} seeds")
    return {b: list(sa[b][:cfg.seeds]) for b in blocks}


def _setup(cfg: RankingConfig) -> tuple[list[str], dict[str, float], Any, list[Any], Any, Any]:
    from nas.core.arch import Arch
    from nas.training.data import load_dataset, num_classes
    blocks, truth = _archs(cfg)
    space = _train_space(cfg, num_classes(cfg.dataset))
    archs = [space.validate(Arch(space.name, space.parse(b).genes)) for b in blocks]
    res = space.input_shape[-1]
    train = load_dataset(cfg.dataset, split="train", seed=cfg.seed, resolution=res)
    val = load_dataset(cfg.dataset, split="val", seed=cfg.seed, resolution=res)
    return blocks, truth, space, archs, train, val


def supernet_scores(cfg: RankingConfig, *, progress: bool = True,
                    say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Train the supernet and score every arch by its BN-recalibrated inherited-weight accuracy."""
    import torch
    from tqdm import tqdm

    from nas.supernet import build_supernet
    from nas.supernet.sampling import resolve_sampling
    from nas.supernet.trainer import SandwichConfig, SupernetEvaluator, calibration_set, train_supernet
    blocks, _, space, archs, train, val = _setup(cfg)
    say(f"{len(archs)} {cfg.space} archs with {cfg.truth_name} truth; training size {space.options()}")
    sseed = cfg.seed if cfg.supernet_seed is None else cfg.supernet_seed
    sw = SandwichConfig(epochs=cfg.supernet_epochs, batch_size=cfg.batch_size, lr=cfg.supernet_lr,
                        random_paths=cfg.random_paths, distill=cfg.distill, seed=sseed,
                        optimizer=cfg.supernet_optimizer, warmup=int(cfg.warmup), sampling=cfg.sampling)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sseed)
        net = build_supernet(space)
    say(f"training the supernet ({resolve_sampling(net, cfg.sampling)} sampling, "
        f"{cfg.supernet_optimizer}, {cfg.supernet_epochs} epochs)")
    history = train_supernet(net, train, sw, val=val, progress=progress)
    score = SupernetEvaluator(net, calibration_set(train[0], sseed), val, calib_batches=cfg.calib_batches,
                              batch_size=cfg.batch_size)
    sup = [score(a)["accuracy"] for a in tqdm(archs, desc="supernet scores", unit="arch", disable=not progress)]
    return {"supernet": dict(zip(blocks, sup)), "supernet_history": history,
            "supernet_settings": cfg.supernet_settings()}


def standalone_accuracies(cfg: RankingConfig, seeds: list[int], *, progress: bool = True, share: tuple[int, int] = (0, 1),
                          on_net: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every arch trained from scratch once per seed index in `seeds` (AdamW, `cfg.epochs`, the config's warm-up,
    clipping, EMA and label smoothing). `share` (i, k):
    only archs i, i+k, i+2k, ... (parts run as parallel processes); `on_net(partial result)` after each net."""
    import torch
    from tqdm import tqdm

    from nas.training.loops import train_eval
    blocks, _, space, archs, train, val = _setup(cfg)
    i, k = share
    blocks, archs = blocks[i::k], archs[i::k]
    stand: dict[str, list[float]] = {b: [] for b in blocks}

    def result() -> dict[str, Any]:
        return {"standalone": {b: v for b, v in stand.items() if len(v) == len(seeds)}, "standalone_seeds": list(seeds),
                "standalone_settings": cfg.standalone_settings()}

    with tqdm(total=len(archs) * len(seeds), desc="stand-alone training", unit="net", disable=not progress) as bar:
        for s in seeds:
            for b, a in zip(blocks, archs):
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(cfg.seed * 1000 + s)
                    model = space.build(a)
                out = train_eval(model, train, val, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                 seed=cfg.seed * 1000 + s, progress=False, optimizer="adamw",
                                 warmup=cfg.standalone_warmup, clip_grad=cfg.clip_grad, ema=cfg.ema,
                                 label_smoothing=cfg.label_smoothing)
                stand[b].append(float(out["accuracy"]))
                bar.update(1)
                if on_net is not None:
                    on_net(result())
    return result()


def supernet_ranking(cfg: RankingConfig, *, progress: bool = True, standalone_from: str | None = None,
                     on_stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train the supernet, score the archs, train them stand-alone, and rank-correlate (module docstring)."""
    say = on_stage or (lambda msg: log.info(msg))
    sup = supernet_scores(cfg, progress=progress, say=say)
    blocks = sorted(sup["supernet"])
    if standalone_from:
        stand = _standalone_reuse(standalone_from, cfg, blocks)
        say(f"stand-alone accuracies reused from {standalone_from}")
    else:
        stand = standalone_accuracies(cfg, list(range(cfg.seeds)), progress=progress)["standalone"]
    return correlate(cfg, sup, stand)


def correlate(cfg: RankingConfig, sup: dict[str, Any], stand: dict[str, list[float]]) -> dict[str, Any]:
    """The result: rank correlations of supernet scores, stand-alone accuracies (per seed) and truth."""
    from nas.supernet.trainer import count_params
    chosen, truth = _archs(cfg)
    from nas.training.data import num_classes
    space = _train_space(cfg, num_classes(cfg.dataset))
    # archs with a supernet score and stand-alone accuracies (all of them, unless parts were cut short)
    blocks = [b for b in chosen if b in sup["supernet"] and b in stand]
    if set(sup["supernet"]) - set(chosen) or set(stand) - set(chosen):
        raise UsageError("supernet scores and stand-alone accuracies are of other archs than this configuration's")
    if len(blocks) < 3:
        raise UsageError(f"only {len(blocks)} archs have both a supernet score and stand-alone accuracies; need 3")
    scores = [sup["supernet"][b] for b in blocks]
    mean = [float(np.mean(stand[b])) for b in blocks]
    gt = [truth[b] for b in blocks]
    params = [float(count_params(space, space.parse(b))) for b in blocks]
    n_seeds = min(len(stand[b]) for b in blocks)
    seeds = [[stand[b][s] for b in blocks] for s in range(n_seeds)]
    ceiling = [rank_stats(seeds[i], seeds[j]) for i in range(n_seeds) for j in range(i + 1, n_seeds)]
    if not ceiling:
        raise UsageError(f"the ceiling needs stand-alone accuracies of at least 2 seeds, got {n_seeds}")
    return {
        "config": json.loads(json.dumps(asdict(cfg))), "truth": cfg.truth_name, "archs": len(blocks),
        "archs_chosen": len(chosen),
        "train_space": space.options(), "dataset": cfg.dataset, "supernet_history": sup.get("supernet_history"),
        "correlations": {
            "ceiling_standalone_seed_vs_seed": _mean_stats(ceiling),
            "supernet_vs_standalone": rank_stats(scores, mean),
            "supernet_vs_truth": rank_stats(scores, gt),
            "standalone_vs_truth": rank_stats(mean, gt),
            "params_vs_standalone": rank_stats(params, mean),
            "params_vs_truth": rank_stats(params, gt)},
        "accuracy_range": {"supernet": [min(scores), max(scores)], "standalone": [min(mean), max(mean)]},
        "seed_noise": seed_noise({b: stand[b] for b in blocks}),
        "published": PUBLISHED,
        "standalone_settings": cfg.standalone_settings(),
        "supernet_settings": sup.get("supernet_settings", "not recorded (a supernet part saved before stop 35)"),
        "per_arch": {b: {"supernet": s, "standalone_mean": m, "truth": t, "params": p}
                     for b, s, m, t, p in zip(blocks, scores, mean, gt, params)},
        "standalone": stand}


def _mean_stats(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean over seed pairs (one pair with 2 seeds)."""
    return {"spearman": float(np.mean([r["spearman"] for r in rows])),
            "kendall": float(np.mean([r["kendall"] for r in rows])), "n": int(rows[0]["n"]), "pairs": len(rows)}


def format_result(r: dict[str, Any]) -> str:
    c = r["correlations"]
    lines = [f"{r['config']['space']}: {r['archs']} archs, data {r['dataset']}, trained at {r['train_space']}; "
             f"truth {r['truth']}",
             f"{'pair':34s} {'kendall':>8s} {'spearman':>9s}"]
    for name, row in c.items():
        lines.append(f"{name:34s} {_f(row['kendall']):>8s} {_f(row['spearman']):>9s}")
    a = r["accuracy_range"]
    lines.append(f"accuracy range: supernet {a['supernet'][0]:.3f}-{a['supernet'][1]:.3f}, "
                 f"stand-alone {a['standalone'][0]:.3f}-{a['standalone'][1]:.3f}")
    if "seed_noise" in r:
        n = r["seed_noise"]
        lines.append(f"stand-alone seed noise sd {n['noise_sd']:.1f} points vs arch spread sd {n['spread_sd']:.1f}")
    return "\n".join(lines)


def _f(v: float) -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


__all__ = ["RankingConfig", "correlate", "format_result", "rank_stats", "seed_noise", "standalone_accuracies",
           "supernet_ranking", "supernet_scores"]
