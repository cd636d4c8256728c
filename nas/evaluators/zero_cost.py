"""The `zero-cost` evaluator: score an untrained net with a training-free proxy.

    nas search --evaluator zero-cost --evaluator-option proxy=synflow
    nas search --evaluator zero-cost --evaluator-option proxy=ensemble --evaluator-option members=synflow,flops

The arch is built at a reduced proxy `resolution` (cheap; proxies are computed on the same reduced
input for every arch, so their ranking stays comparable) with weights initialised from the
evaluator's seed, and scored on one batch of real images: `batch` training images of `dataset` (a
seeded random subset; default the embedded `digits`, upscaled; any spec of nas.training.data), as the reference
implementations do (NASWOT scores a real mini-batch of 128, zero-cost-nas of 64). `dataset=noise` keeps
the old batch of seeded Gaussian images with random labels. The result holds `score` (the chosen
proxy), the proxy under its own name, and `params_m` and `macs_m` of the full net (counted from the
space's layer specs). Nothing is built when every proxy asked for is counted from the arch
(`params`, `flops`): then an evaluation costs microseconds, not a torch net.
Proxies (nas.evaluators.proxies, `PROXIES`): synflow, snip, grad_norm, fisher, jacob_cov,
naswot, meco, swap, and the size baselines params and flops. `proxy=swap` with `swap_mu=M` (and
`swap_sigma=S`, default 1) scores SWAP times exp(-(params_m - M)**2 / S) (its paper's size
regularisation, steering the search toward nets of about M million parameters); the raw count stays
in the `swap` metric.

`ensemble` makes a per-arch score out of several proxies without depending on which archs were
seen before (so trial order, resumes and parallel workers do not change it): each member proxy is
standardised against a fixed reference sample - `reference` archs drawn from the space with the
evaluator's seed, scored once - and the score is the mean of the members' z-scores (log-scaled
first for proxies whose values span orders of magnitude, clipped to +-10). For roughly normal
member distributions this is the average rank of the members expressed in standard deviations, a
smooth version of the vote of Abdelfattah et al. 2021, without ties.
"""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.evaluators.proxies import PROXIES, ProxyDef
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
ENSEMBLE = "ensemble"
#: default ensemble members: the three proxies of the vote of Abdelfattah et al. 2021.
#: benchmarks/proxy_ranking.py could not pick better ones here: with a few epochs on digits, two
#: training seeds rank the same archs no better than chance, so no proxy ranking is measurable there.
DEFAULT_MEMBERS: tuple[str, ...] = ("synflow", "jacob_cov", "snip")
#: the proxy batch's images: real ones of this dataset unless `dataset` is given; NOISE = Gaussian images
DEFAULT_DATASET = "digits"
NOISE = "noise"

__all__ = ["PROXIES", "ENSEMBLE", "DEFAULT_MEMBERS", "DEFAULT_DATASET", "NOISE", "ZeroCostEvaluator", "proxy_names"]


def proxy_names() -> list[str]:
    return sorted([*PROXIES.names(), ENSEMBLE])


def _get_proxy(name: str) -> ProxyDef:
    if name not in PROXIES:
        raise UsageError(f"unknown zero-cost proxy {name!r}; valid proxies: {', '.join(proxy_names())}")
    return PROXIES.get(name)


def _members(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_MEMBERS
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    if len(names) < 2:
        raise UsageError(f"an ensemble needs at least 2 member proxies, got {names!r}; "
                         f"valid members: {', '.join(PROXIES.names())}")
    for n in names:
        _get_proxy(n)
    return tuple(names)


def _scaled(defn: ProxyDef, value: float) -> float:
    if defn.log_scale:
        return math.log(value) if value > 0 else -math.inf
    return value


class ZeroCostEvaluator:
    """`score` = a zero-cost proxy (or the `ensemble` of several) of the arch."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, proxy: str = "naswot", batch: int = 16,
                 resolution: int | None = 64, num_classes: int | None = None, dataset: str | None = None,
                 members: str | Sequence[str] | None = None, reference: int = 20, device: str = "cpu",
                 swap_mu: float | None = None, swap_sigma: float | None = None) -> None:
        if int(batch) < 2:
            raise UsageError(f"zero-cost batch must be at least 2 (jacob_cov and naswot compare samples), got {batch}")
        self.space, self.seed, self.batch, self.device = space, int(seed), int(batch), device
        self.proxy_name = proxy
        self.swap_reg: tuple[float, float] | None = None
        if swap_mu is not None or swap_sigma is not None:
            if proxy != "swap":
                raise UsageError(f"swap_mu / swap_sigma regularise proxy=swap, not proxy={proxy}")
            try:
                mu, sigma = float(swap_mu if swap_mu is not None else math.nan), float(1.0 if swap_sigma is None
                                                                                       else swap_sigma)
            except (TypeError, ValueError):
                raise UsageError(f"swap_mu and swap_sigma must be numbers (millions of parameters), got "
                                 f"{swap_mu!r}, {swap_sigma!r}") from None
            if not math.isfinite(mu) or not (math.isfinite(sigma) and sigma > 0):
                raise UsageError(f"swap regularisation needs a finite swap_mu and a positive swap_sigma, got "
                                 f"swap_mu={swap_mu!r}, swap_sigma={swap_sigma!r}")
            self.swap_reg = (mu, sigma)
        if proxy == ENSEMBLE:
            self.members = _members(members)
        else:
            _get_proxy(proxy)
            self.members = (proxy,)
        if int(reference) < 3:
            raise UsageError(f"ensemble reference sample must hold at least 3 archs, got {reference}")
        self.reference = int(reference)
        self._ref_stats: dict[str, tuple[float, float]] | None = None
        opts = space.options()
        self.proxy_space = space
        if resolution is not None and "resolution" in opts and opts["resolution"] != int(resolution):
            self.proxy_space = _proxy_space(space, int(resolution))
        self.dataset = str(dataset) if dataset else DEFAULT_DATASET   # NOISE: Gaussian images, random labels
        self.num_classes = int(num_classes or getattr(space, "num_classes", None) or 10)
        #: some member needs a built net and a batch (arch-only proxies such as params and flops do not)
        self.needs_model = any(PROXIES.get(m).model_fn is not None for m in self.members)
        self._x: "torch.Tensor | None" = None
        self._y: "torch.Tensor | None" = None
        if self.needs_model or dataset:   # a --dataset is checked up front even when unused
            self._x, self._y = self._make_batch()

    def _make_batch(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch
        shape = tuple(self.proxy_space.input_shape)
        if self.dataset != NOISE:
            from nas.training.data import load_dataset, num_classes, parse_spec, resize
            # fixed-size datasets load at their own size and only the batch is resized (resizing all
            # 1,438 digits to 224 px took 27 s); normalising commutes with the bilinear resize
            native = parse_spec(self.dataset).kind in ("digits", "synthetic", "cifar10")
            x, y = load_dataset(self.dataset, split="train", seed=self.seed, resolution=None if native else shape[-1])
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))[:self.batch]
            x, y = x[idx], y[idx]
            if native and x.shape[-1] != shape[-1]:
                x = resize(x, shape[-1])
            if tuple(x.shape[1:]) != shape:
                raise UsageError(f"dataset {self.dataset!r} gives inputs {tuple(x.shape[1:])}, the {self.space.name} "
                                 f"space takes {shape}")
            self.num_classes = num_classes(self.dataset)
            return x.to(self.device), y.to(self.device)
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.batch, *shape, generator=g)
        y = torch.randint(0, self.num_classes, (self.batch,), generator=g)
        return x.to(self.device), y.to(self.device)

    # ---- scoring ---------------------------------------------------------------------------------
    def build(self, arch: Arch) -> "torch.nn.Module":
        """The proxy net with weights drawn from the evaluator's seed (global torch RNG untouched)."""
        import torch
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.proxy_space.build(arch, num_classes=self.num_classes)
        return model.to(self.device).train()

    def proxies(self, arch: Arch, names: Sequence[str], model: "torch.nn.Module | None" = None) -> dict[str, float]:
        """Raw values of the named proxies for one arch, each on a fresh copy of the same net
        (`model`, when given, is used by the first and modified)."""
        defs = [_get_proxy(n) for n in names]
        out: dict[str, float] = {}
        for d in defs:
            if d.arch_fn is not None:
                out[d.name] = float(d.arch_fn(self.space, arch))
            else:
                assert d.model_fn is not None
                # proxies modify the net they get; a seeded rebuild is an identical fresh copy (and
                # cheaper than deepcopy)
                net = model if model is not None else self.build(arch)
                model = None
                if self._x is None or self._y is None:
                    self._x, self._y = self._make_batch()
                out[d.name] = float(d.model_fn(net, self._x, self._y))
        return out

    def _reference_stats(self) -> dict[str, tuple[float, float]]:
        if self._ref_stats is None:
            rng = np.random.default_rng([self.seed, 0x5EF])
            archs = [self.space.sample(rng) for _ in range(self.reference)]
            log.info("scoring %d reference archs for the %s ensemble", len(archs), "+".join(self.members))
            rows = [self.proxies(a, self.members) for a in archs]
            stats = {}
            for m in self.members:
                v = np.array([_scaled(PROXIES.get(m), r[m]) for r in rows])
                finite = v[np.isfinite(v)]
                if finite.size == 0:
                    stats[m] = (0.0, 1.0)
                    continue
                v = np.clip(v, finite.min(), finite.max())
                std = float(v.std())
                stats[m] = (float(v.mean()), std if std > 0 else 1.0)
            self._ref_stats = stats
        return self._ref_stats

    def ensemble_score(self, values: dict[str, float]) -> float:
        stats = self._reference_stats()
        zs = []
        for m in self.members:
            mean, std = stats[m]
            z = (_scaled(PROXIES.get(m), values[m]) - mean) / std
            zs.append(float(np.clip(z, -10.0, 10.0)) if not math.isnan(z) else -10.0)
        return float(np.mean(zs))

    def __call__(self, arch: Arch) -> dict[str, float]:
        from search_spaces.op_params import arch_size
        model = self.build(arch) if self.needs_model else None
        values = self.proxies(arch, self.members, model)
        params, macs = arch_size(self.space, arch)
        score = self.ensemble_score(values) if self.proxy_name == ENSEMBLE else values[self.proxy_name]
        if self.swap_reg is not None:
            from nas.evaluators.proxies import swap_regularised
            score = swap_regularised(score, params / 1e6, *self.swap_reg)
        out = {"score": float(score), **values}
        if self.proxy_name == ENSEMBLE:
            out[ENSEMBLE] = float(score)
        out["params_m"] = params / 1e6
        out["macs_m"] = macs / 1e6
        return out


def make_zero_cost(space: SearchSpace, seed: int = 0, **options: Any) -> ZeroCostEvaluator:
    import inspect
    valid = [p for p in inspect.signature(ZeroCostEvaluator.__init__).parameters if p not in ("self", "space", "seed")]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(f"zero-cost evaluator has no option {bad[0]!r}; valid options: {', '.join(valid)}")
    return ZeroCostEvaluator(space, seed=seed, **options)


def _proxy_space(space: SearchSpace, resolution: int) -> SearchSpace:
    """The space rebuilt at the smallest resolution >= `resolution` that it accepts (a ViT needs a
    whole patch grid, for example); the space itself if none up to its own resolution is accepted."""
    from search_spaces.catalog import get_space
    opts = space.options()
    for r in range(resolution, max(resolution, int(opts["resolution"])) + 1):
        try:
            return get_space(space.name, **{**opts, "resolution": r})
        except UsageError:
            continue
    return space
