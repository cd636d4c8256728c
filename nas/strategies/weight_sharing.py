"""Weight-sharing strategies: `supernet` (one-shot + evolution), `single-path` and `darts`.

These are trainers first: `prepare(ctx)` trains on the context's dataset and returns the evaluator
the trials use (the optional training phase of `nas.pipeline.search`). After that they are
ordinary ask/tell strategies - regularized evolution, whose state is rebuilt from the trials -
so the runner, stores and resume work unchanged:

* ``supernet``: trains the space's supernet with the sandwich rule, then evolution scores archs by
  their BN-recalibrated supernet accuracy under the latency constraints;
* ``single-path``: Single-Path NAS; the arch read from the thresholds is the first (by default
  only) trial, scored with its inherited weights;
* ``darts``: DARTS on the nasnet darts variant; the derived genotype is the first (by default
  only) trial, scored by training it from scratch for `retrain_epochs`.

Training runs at the searched size when the data allows, else on a smaller copy of the searched
space (`resolution`, `width_mult` / `channels`, `cells`, any `train_options`; same decisions), always
with the dataset's classes - `train_size` (nas/strategies/train_size.py) - while latency is predicted
with the searched space's tables. ``supernet`` works on every space with a supernet
(`nas.supernet.SUPERNETS`: mbconv, hytra, vit_resnas, nasnet, ofa_mbv3). Checkpoints go to ``<out>/`` and are reused when a
search resumes. Under torchrun every rank trains data-parallel (`ctx.dist`, nas/training/distributed.py); rank 0
alone writes the checkpoint. Torch is imported only inside `prepare`, so registering these strategies
stays cheap.
"""
from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import asdict
from typing import Any, Callable, ClassVar, Mapping

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace
from nas.strategies.base import Evaluator, TrainContext
from nas.strategies.evolution import RegularizedEvolution
from nas.strategies.ws_checkpoint import _inherit, _seeded, reuse_or_train  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


class WeightSharingStrategy(RegularizedEvolution):
    """Base: train in `prepare`, then evolution (asking `seeds` first: archs the training derived)."""

    weight_sharing: ClassVar[bool] = True
    default_epochs: ClassVar[int] = 2
    default_batch_size: ClassVar[int] = 64
    #: None: run the trials asked for; an int: that many (a differentiable search yields one arch)
    fixed_trials: ClassVar[int | None] = None

    #: the proxy size (`train_size`): defaults of the size options a strategy takes (None: not given)
    proxy_size: ClassVar[dict[str, Any]] = {"resolution": 32, "width_mult": 0.25, "channels": 8, "cells": 1}
    default_train_size: ClassVar[str] = "auto"

    def __init__(self, space: SearchSpace, *, epochs: int | None = None, batch_size: int | None = None,
                 dataset: str | None = None, resolution: int | None = None, device: str | None = None,
                 refine: int = 0, train_options: Mapping[str, Any] | None = None, train_size: str | None = None,
                 checkpoint_every: int = 20, memory_gb: float = 2.0, **kwargs: Any) -> None:
        from nas.strategies.train_size import check_train_size
        super().__init__(space, **kwargs)
        self.epochs, self.batch_size, self.dataset = epochs, batch_size, dataset
        self.device, self.refine = device, int(refine)
        self.train_size = check_train_size(train_size or self.default_train_size)
        self.given: list[str] = []           # proxy-size options the user set
        self.resolution = int(self._size("resolution", resolution))
        if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
            raise UsageError(f"checkpoint_every must be a whole number of steps >= 0 (0: after each epoch only), "
                             f"got {checkpoint_every!r}")
        #: training state written every this many steps (and after each epoch) for resuming
        self.checkpoint_every = checkpoint_every
        if not isinstance(memory_gb, (int, float)) or isinstance(memory_gb, bool) or not memory_gb > 0:
            raise UsageError(f"memory_gb must be a positive number of GB, got {memory_gb!r}")
        #: train_size=auto trains the proxy when the searched size is estimated to need more than this
        self.memory_gb = float(memory_gb)
        if self.refine < 0:
            raise UsageError(f"refine must be >= 0 (extra evolution trials after the derived arch), got {refine}")
        if train_options is not None and not isinstance(train_options, Mapping):
            raise UsageError(f"train_options must be a JSON object of space options, got {train_options!r}")
        #: further options of the training space, e.g. {"patch": 4} for vit_resnas at 32x32
        self.train_options = dict(train_options or {})
        if self.train_options:
            self.given.append("train_options")
        self.seeds: list[Arch] = []

    def _size(self, name: str, value: Any) -> Any:
        """A proxy-size option: `value` if given (and remembered as given), else the default."""
        if value is None:
            return self.proxy_size[name]
        self.given.append(name)
        return value

    def supernet_state(self, width_mult: float | None, channels: int | None, cells: int | None,
                       calib_batches: int) -> None:
        """The proxy size of a supernet (width_mult for mbconv's training width; channels / cells for
        the nasnet cell space's) and the trained net with its BN-recalibration batches, set in prepare."""
        self.width_mult = float(self._size("width_mult", width_mult))
        self.channels, self.cells = int(self._size("channels", channels)), int(self._size("cells", cells))
        self.calib_batches = calib_batches
        self.net: Any = None
        self.calib: Any = None
        self.calib_bs = 64

    def train_space(self, ctx: TrainContext, *names: str) -> SearchSpace:
        """The space to train on (`nas.strategies.train_size`): the searched one or the proxy made of
        the size options `names` (+ `train_options`); the choice goes to `info["train_size"]`."""
        from nas.strategies.train_size import choose_train_space
        proxy = {n: getattr(self, n) for n in ("resolution", *names)}
        given = [g for g in self.given if g in (*proxy, "train_options")]
        small, why = choose_train_space(ctx.space, ctx.dataset, self.train_size, proxy, given,
                                        ctx.num_classes(), self.train_options)
        if why["used"] == "searched" and self.estimates_memory:
            gb = self._memory_gb(small, int(ctx.batch_size or self.default_batch_size))
            why["memory_estimate_gb"] = gb
            if gb > self.memory_gb and self.train_size == "auto":   # a laptop must run the default
                small, why = choose_train_space(ctx.space, ctx.dataset, "proxy", proxy, given,
                                                ctx.num_classes(), self.train_options)
                why.update(asked="auto", searched_memory_estimate_gb=gb,
                           why=f"training at the searched size needs about {gb:.1f} GB (estimate), over "
                               f"memory_gb={self.memory_gb:g} (train_size=searched trains it anyway)")
                log.warning("%s: %s; training the proxy instead", self.name, why["why"])
            elif gb > self.memory_gb:
                log.warning("%s: training at the searched size needs about %.1f GB (estimate), over memory_gb=%g",
                            self.name, gb, self.memory_gb)
        self.size_info = why
        return small

    #: the trainer's net is the space's supernet (`nas.supernet.memory` can estimate its training memory)
    estimates_memory: ClassVar[bool] = False

    @staticmethod
    def _memory_gb(space: SearchSpace, batch_size: int) -> float:
        from nas.supernet.memory import training_bytes
        return round(training_bytes(space, batch_size)["bytes"] / 2**30, 2)

    def trained(self, path: Any, meta: dict[str, Any], module: Any, train: Callable[[Any], list[dict[str, Any]]],
                ctx: TrainContext, small: SearchSpace, **info: Any) -> None:
        """Train (or reuse the checkpoint at `path`, or continue the training state beside it) and fill
        `info` with what the search reports. `train(checkpoint)` runs the trainer."""
        meta = {**meta, "strategy": self.name}
        self.info = reuse_or_train(path, meta, module, train, ctx.dist, resume=ctx.resume, every=self.checkpoint_every)
        self.info.update(train_space=small.options(), train_size=self.size_info, dataset=ctx.dataset, **info)

    # ---- flow hooks --------------------------------------------------------------------------
    def trials(self, requested: int) -> int:
        return requested if self.fixed_trials is None else self.fixed_trials + self.refine

    def context(self, ctx: TrainContext) -> TrainContext:
        """`ctx` with this strategy's own options (they win over the search-wide ones)."""
        from dataclasses import replace
        return replace(ctx, dataset=self.dataset or ctx.dataset, device=self.device or ctx.device,
                       epochs=self.epochs or ctx.epochs or self.default_epochs,
                       batch_size=self.batch_size or ctx.batch_size or self.default_batch_size)

    @abstractmethod
    def prepare(self, ctx: TrainContext) -> Evaluator:
        """Train (or load a checkpoint from ctx.out) and return the evaluator of the trials."""

    def ask(self) -> Arch:
        for arch in self.seeds:
            if self.is_new(arch):
                if not self.feasible(arch):   # the unconstrained arch, scored beside its projection
                    log.info("%s: scoring the unconstrained derived arch %s (it breaks a bound) for comparison",
                             self.name, self.space.format(arch))
                return arch
        return super().ask()


class SupernetStrategy(WeightSharingStrategy):
    """One-shot: sandwich-rule supernet training, then constrained evolution on supernet accuracy."""

    name = "supernet"
    default_epochs = 3
    estimates_memory = True

    @classmethod
    def supported_spaces(cls) -> tuple[str, ...]:
        from nas.supernet import SUPERNETS
        return tuple(SUPERNETS.names())

    @classmethod
    def supports(cls, space: SearchSpace) -> bool:   # a space may bring its own supernet() too
        return callable(getattr(space, "supernet", None)) or super().supports(space)

    def __init__(self, space: SearchSpace, *, lr: float = 0.1, random_paths: int = 2, distill: bool = True,
                 width_mult: float | None = None, channels: int | None = None, cells: int | None = None,
                 calib_batches: int = 4, optimizer: str = "sgd", sampling: str | None = None, warmup: int = 0,
                 **kwargs: Any) -> None:
        from nas.supernet.trainer import SandwichConfig
        super().__init__(space, **kwargs)
        self.lr, self.random_paths, self.distill = lr, random_paths, distill
        # bad optimizer / sampling / warmup: one line naming the valid choices, before any training
        SandwichConfig(lr=lr, random_paths=random_paths, optimizer=optimizer, sampling=sampling, warmup=warmup)
        self.optimizer, self.sampling, self.warmup = optimizer, sampling, warmup
        self.supernet_state(width_mult, channels, cells, calib_batches)

    def prepare(self, ctx: TrainContext) -> Evaluator:
        from nas.supernet import build_supernet
        from nas.supernet.trainer import (
            SandwichConfig,
            SupernetEvaluator,
            calibration_set,
            supernet_meta,
            to_device,
            train_supernet,
        )
        ctx = self.context(ctx)
        small = self.train_space(ctx, "width_mult", *self._cell_options(ctx.space))
        cfg = SandwichConfig(epochs=ctx.epochs, batch_size=ctx.batch_size, lr=self.lr,  # type: ignore[arg-type]
                             random_paths=self.random_paths, distill=self.distill, seed=ctx.seed,
                             optimizer=self.optimizer, sampling=self.sampling, warmup=self.warmup)
        res = small.input_shape[-1]
        train, val = ctx.load("train", res), ctx.load("val", res)
        self.net = to_device(_seeded(ctx.seed, build_supernet, small), ctx.device)
        meta = supernet_meta(ctx.space, small, cfg, ctx.dataset)
        path = ctx.out / "supernet.pt" if ctx.out else None
        self.trained(path, meta, self.net, lambda ck: train_supernet(
            self.net, train, cfg, val=val, progress=ctx.progress, dist=ctx.dist, checkpoint=ck),
            ctx, small, config=asdict(cfg))
        self.calib, self.calib_bs = calibration_set(train[0], ctx.seed), cfg.batch_size
        return SupernetEvaluator(self.net, self.calib, val, calib_batches=self.calib_batches,
                                 batch_size=cfg.batch_size, report_space=ctx.space)

    def _cell_options(self, space: SearchSpace) -> tuple[str, ...]:
        """channels / cells: proxy-size options of the cell space only (its supernet holds every op of
        every edge of every cell: the searched 36 channels x 6 cells are slow on a CPU)."""
        return ("channels", "cells") if space.name == "nasnet" else ()

    def inherited(self, arch: Arch) -> tuple[SearchSpace, dict[str, Any]] | None:
        return _inherit(self.net, self.calib, self.calib_batches, self.calib_bs, arch)


class SinglePathStrategy(WeightSharingStrategy):
    """Single-Path NAS on the MBConv space: thresholds + differentiable LUT latency."""

    name = "single-path"
    follows_candidates: ClassVar[bool] = False   # the derived arch comes from the trained gates, not sampling
    default_epochs = 3
    fixed_trials = 1

    @classmethod
    def supported_spaces(cls) -> tuple[str, ...]:
        return ("mbconv",)

    def __init__(self, space: SearchSpace, *, lr: float = 0.1, arch_lr: float = 0.2, lam: float = 1.0,
                 target_ms: float | None = None, tau: float = 0.25, t_init: float = 0.5,
                 width_mult: float | None = None, calib_batches: int = 4, **kwargs: Any) -> None:
        super().__init__(space, **kwargs)
        self.lr, self.arch_lr, self.lam, self.target_ms = lr, arch_lr, lam, target_ms
        self.tau, self.t_init, self.calib_batches = tau, t_init, calib_batches
        self.width_mult = float(self._size("width_mult", width_mult))
        self.net: Any = None
        self.calib: Any = None
        self.calib_bs = 64

    def prepare(self, ctx: TrainContext) -> Evaluator:
        from nas.differentiable.single_path import (
            LatencyTerm,
            SinglePathConfig,
            SinglePathNet,
            train_single_path,
        )
        from nas.differentiable.single_path_repair import repair
        from nas.supernet.trainer import SupernetEvaluator, calibration_set, to_device
        ctx = self.context(ctx)
        if ctx.space.name != "mbconv":
            raise UsageError(f"single-path searches the mbconv space, not {ctx.space.name!r}")
        if not ctx.latency:
            raise UsageError("single-path needs a latency table: give --target (e.g. pixel1)")
        target = next(iter(ctx.latency))
        lut = ctx.latency[target]
        goal = self.target_ms if self.target_ms is not None else ctx.bounds.get(target)
        small = self.train_space(ctx, "width_mult")
        cfg = SinglePathConfig(epochs=ctx.epochs, batch_size=ctx.batch_size, lr=self.lr,  # type: ignore[arg-type]
                               arch_lr=self.arch_lr, lam=self.lam, latency_ms=goal, tau=self.tau,
                               t_init=self.t_init, seed=ctx.seed)
        res = small.input_shape[-1]
        train, val = ctx.load("train", res), ctx.load("val", res)
        self.net = to_device(_seeded(ctx.seed, SinglePathNet, small, tau=self.tau, t_init=self.t_init), ctx.device)
        meta = {"space": ctx.space.name, "space_options": ctx.space.options(), "train_options": small.options(),
                "config": asdict(cfg), "dataset": ctx.dataset, "target": target}
        path = ctx.out / "single_path.pt" if ctx.out else None
        self.trained(path, meta, self.net, lambda ck: train_single_path(
            self.net, train, LatencyTerm.from_lut(small, lut), cfg, val=val, progress=ctx.progress, dist=ctx.dist,
            checkpoint=ck),
            ctx, small, config=asdict(cfg), target=target)
        derived = self.net.derive()
        arch = self.unconstrained = ctx.space.make(derived.genes)
        self.info.update(derived=ctx.space.format(arch), derived_latency_ms=float(lut.predict(arch)))
        bound = ctx.bounds.get(target)
        if bound is not None and lut.predict(arch) > bound:
            fixed = repair(self.net, derived, lambda a: lut.predict(ctx.space.make(a.genes)), bound)
            log.warning("single-path: derived arch takes %.2f ms > %g ms on %s; closed the least certain gates: %s",
                        lut.predict(arch), bound, target, small.format(fixed))
            arch = ctx.space.make(fixed.genes)
            self.info["repaired"] = ctx.space.format(arch)
        self.seeds = [arch]
        self.net.relaxed = False    # score archs by their path (inherited weights), not the gated net
        self.calib, self.calib_bs = calibration_set(train[0], ctx.seed), cfg.batch_size
        return SupernetEvaluator(self.net, self.calib, val, calib_batches=self.calib_batches,
                                 batch_size=cfg.batch_size, report_space=ctx.space)

    def inherited(self, arch: Arch) -> tuple[SearchSpace, dict[str, Any]] | None:
        return _inherit(self.net, self.calib, self.calib_batches, self.calib_bs, arch)


class DartsStrategy(WeightSharingStrategy):
    """DARTS on the nasnet space (variant=darts); the derived genotype is retrained to score it."""

    name = "darts"
    follows_candidates: ClassVar[bool] = False   # the derived arch comes from the trained gates, not sampling
    # 8 epochs (4 of them weights only) of batches of 32 at 8x8 on digits: the normal cell comes out
    # mostly separable / dilated convs; 3 epochs of 64 at 16x16 (1 warm-up) left the alphas within 0.01
    # of uniform and derived an all-pooling cell (README, "DARTS on a CPU")
    default_epochs = 8
    default_batch_size = 32
    fixed_trials = 1

    @classmethod
    def supported_spaces(cls) -> tuple[str, ...]:
        return ("nasnet",)

    @classmethod
    def supports(cls, space: SearchSpace) -> bool:
        return space.name == "nasnet" and getattr(space, "variant", None) == "darts"

    @classmethod
    def supported_text(cls) -> str:
        return "nasnet with variant=darts (-o variant=darts)"

    # 16x16 by default: a DARTS search net keeps every op's output of every edge in memory, and
    # the digits (8x8 originals) lose nothing at 16x16
    proxy_size = {"resolution": 16, "channels": 8, "cells": 1}
    # a proxy by default, as DARTS does (Liu et al. 2019, Sec. 3.1: searched with 8 cells of 16
    # channels, evaluated with 20 of 36): its search net holds all 8 ops of every edge, and the
    # derived cell is retrained anyway; train_size=auto|searched ask for the searched size
    default_train_size = "proxy"

    def __init__(self, space: SearchSpace, *, lr: float = 0.025, arch_lr: float = 3e-3, order: int = 1,
                 channels: int | None = None, cells: int | None = None, warmup_epochs: int = 4,
                 retrain_epochs: int = 2, retrain_lr: float = 0.05, resolution: int | None = None,
                 **kwargs: Any) -> None:
        # resolution None: 8 on digits (its images are 8x8: nothing is lost, and a step costs half
        # of one at 16x16), else the proxy's 16 (a DARTS search net keeps every op's output of every
        # edge in memory); set in prepare, once the dataset is known
        self.auto_resolution = resolution is None
        super().__init__(space, resolution=resolution, **kwargs)
        self.lr, self.arch_lr, self.order = lr, arch_lr, int(order)
        self.channels, self.cells = int(self._size("channels", channels)), int(self._size("cells", cells))
        self.warmup_epochs = int(warmup_epochs)
        self.retrain_epochs, self.retrain_lr = int(retrain_epochs), float(retrain_lr)
        self.states: dict[Arch, dict[str, Any]] = {}
        self.small: SearchSpace | None = None

    def prepare(self, ctx: TrainContext) -> Evaluator:
        from nas.differentiable.darts import DartsConfig, DartsNet, split_half, train_darts
        from nas.supernet.trainer import RetrainEvaluator, to_device
        ctx = self.context(ctx)
        if self.auto_resolution:
            from nas.training.data import parse_spec
            self.resolution = 8 if parse_spec(ctx.dataset or "digits").kind == "digits" else 16
        if getattr(ctx.space, "variant", None) != "darts":
            raise UsageError(f"darts searches the nasnet space with variant=darts (--space nasnet -o variant=darts); "
                             f"got {ctx.space.describe()}")
        self.small = small = self.train_space(ctx, "channels", "cells")
        cfg = DartsConfig(epochs=ctx.epochs, batch_size=ctx.batch_size, lr=self.lr,  # type: ignore[arg-type]
                          arch_lr=self.arch_lr, order=self.order, seed=ctx.seed,
                          warmup_epochs=min(self.warmup_epochs, int(ctx.epochs or 1) - 1))
        res = small.input_shape[-1]
        train, val = ctx.load("train", res), ctx.load("val", res)
        net = to_device(_seeded(ctx.seed, DartsNet, small), ctx.device)
        meta = {"space": ctx.space.name, "space_options": ctx.space.options(), "train_options": small.options(),
                "config": asdict(cfg), "dataset": ctx.dataset, "cell_bn": "non-affine"}   # older darts.pt: retrained
        path = ctx.out / "darts.pt" if ctx.out else None
        self.trained(path, meta, net, lambda ck: train_darts(net, *split_half(train, ctx.seed), cfg, val=val,
                                                             progress=ctx.progress, dist=ctx.dist, checkpoint=ck),
                     ctx, small, config=asdict(cfg))
        normal, reduce = net.genotype()
        arch = net.derive(ctx.space)  # type: ignore[arg-type]
        self.seeds = [arch]
        self.info.update(genotype={"normal": normal, "reduce": reduce}, derived=ctx.space.format(arch),
                         alpha_normal=net.alpha_normal.detach().softmax(-1).tolist(),
                         alpha_reduce=net.alpha_reduce.detach().softmax(-1).tolist())
        return RetrainEvaluator(small, train, val, epochs=self.retrain_epochs, batch_size=ctx.batch_size or 64,
                                lr=self.retrain_lr, seed=ctx.seed, device=ctx.device, report_space=ctx.space,
                                keep=self.states, progress=ctx.progress)

    def inherited(self, arch: Arch) -> tuple[SearchSpace, dict[str, Any]] | None:
        state = self.states.get(arch)
        return (self.small, state) if state is not None and self.small is not None else None
