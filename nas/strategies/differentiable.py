"""`differentiable`: ProxylessNAS-style search on every space with a weight-sharing supernet.

Arch logits per decision, single sampled paths through the space's supernet, bilevel updates and
a latency term from the target's table (`nas.differentiable.proxyless`). The derived arch (the most
probable one within the bound) is the first trial, scored by its inherited weights after BN
recalibration; `refine` adds evolution trials on the same supernet. Torch is imported in `prepare`.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace
from nas.strategies.base import Evaluator, TrainContext
from nas.strategies.weight_sharing import SupernetStrategy, WeightSharingStrategy, _inherit, _seeded

log = logging.getLogger(__name__)


class DifferentiableStrategy(WeightSharingStrategy):
    """ProxylessNAS on any supernet: sampled paths, REINFORCE + expected LUT latency."""

    name = "differentiable"
    follows_candidates = False   # the derived arch comes from the trained path probabilities
    default_epochs = 3
    fixed_trials = 1
    estimates_memory = True

    def __init__(self, space: SearchSpace, *, lr: float = 0.05, arch_lr: float = 0.1, paths: int = 2,
                 lam: float = 20.0, target_ms: float | None = None, width_mult: float | None = None,
                 channels: int | None = None, cells: int | None = None, calib_batches: int = 4, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        self.lr, self.arch_lr, self.paths, self.lam, self.target_ms = lr, arch_lr, paths, lam, target_ms
        self.supernet_state(width_mult, channels, cells, calib_batches)

    @classmethod
    def supported_spaces(cls) -> tuple[str, ...]:
        return SupernetStrategy.supported_spaces()

    @classmethod
    def supports(cls, space: SearchSpace) -> bool:
        return SupernetStrategy.supports(space)

    def prepare(self, ctx: TrainContext) -> Evaluator:
        import numpy as np
        import torch

        from nas.differentiable.darts import split_half
        from nas.differentiable.proxyless import ArchPolicy, ExpectedLatency, ProxylessConfig, train_proxyless
        from nas.supernet import build_supernet
        from nas.supernet.trainer import SupernetEvaluator, calibration_set, to_device
        ctx = self.context(ctx)
        if not ctx.latency:
            raise UsageError("differentiable needs a latency table: give --target (e.g. pixel1)")
        target = next(iter(ctx.latency))
        lut = ctx.latency[target]
        goal = self.target_ms if self.target_ms is not None else ctx.bounds.get(target)
        small = self.train_space(ctx, "width_mult", *(("channels", "cells") if ctx.space.name == "nasnet" else ()))
        cfg = ProxylessConfig(epochs=ctx.epochs, batch_size=ctx.batch_size, lr=self.lr,  # type: ignore[arg-type]
                              arch_lr=self.arch_lr, paths=self.paths, lam=self.lam, latency_ms=goal, seed=ctx.seed)
        train, val = ctx.load("train", small.input_shape[-1]), ctx.load("val", small.input_shape[-1])
        self.net = to_device(_seeded(ctx.seed, build_supernet, small), ctx.device)
        policy = ArchPolicy(small)
        holder = torch.nn.ModuleDict({"net": self.net, "policy": policy})   # one checkpoint for both
        meta = {"space": ctx.space.name, "space_options": ctx.space.options(), "train_options": small.options(),
                "config": asdict(cfg), "dataset": ctx.dataset, "target": target}
        path = ctx.out / "differentiable.pt" if ctx.out else None
        expected = ExpectedLatency(lut) if getattr(lut, "separable", False) else None
        self.trained(path, meta, holder, lambda ck: train_proxyless(
            self.net, policy, *split_half(train, ctx.seed), cfg, lambda a: float(lut.predict(ctx.space.make(a.genes))),
            expected, dist=ctx.dist, checkpoint=ck), ctx, small)
        rng = np.random.default_rng([ctx.seed, 0xDE])
        top = policy.derive(rng)
        bound = ctx.bounds.get(target)
        fits = None if bound is None else (lambda a: float(lut.predict(ctx.space.make(a.genes))) <= bound)
        arch = self.unconstrained = ctx.space.make(top.genes)
        self.policy = policy   # its logits order the choices when the result is projected on the bounds
        if fits is not None and not fits(top):
            arch = self._within_bound(policy, rng, fits, arch)
        self.seeds = [arch]
        self.info.update(config=asdict(cfg), target=target,
                         latency_term="expected (separable LUT)" if expected else "sampled path in the reward",
                         most_probable=ctx.space.format(ctx.space.make(top.genes)),
                         most_probable_latency_ms=float(lut.predict(ctx.space.make(top.genes))),
                         derived=ctx.space.format(arch), derived_latency_ms=float(lut.predict(arch)),
                         repaired=bool(self.info.get("repaired", False)))
        self.calib, self.calib_bs = calibration_set(train[0], ctx.seed), cfg.batch_size
        return SupernetEvaluator(self.net, self.calib, val, calib_batches=self.calib_batches,
                                 batch_size=cfg.batch_size, report_space=ctx.space)

    def _within_bound(self, policy: Any, rng: Any, fits: Any, top: Arch) -> Arch:
        """The most probable of the policy's samples within the bound; failing that, the most probable
        arch stepped down to cheaper choices until it fits (evolution's repair, separable tables)."""
        from nas.core.errors import NasError
        try:
            return self.space.make(policy.derive(rng, fits).genes)
        except NasError:
            if self.latency is None:
                raise
        fixed = self.space.decode(self._repair(self.space.encode(top)))
        log.warning("differentiable: no policy sample meets the bound; stepped the most probable arch down: %s",
                    self.space.format(fixed))
        self.info["repaired"] = True
        return fixed

    def inherited(self, arch: Arch) -> tuple[SearchSpace, dict[str, Any]] | None:
        return _inherit(self.net, self.calib, self.calib_batches, self.calib_bs, arch)
