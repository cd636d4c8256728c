"""Train a found arch from scratch with a standard recipe: `train_arch(space, arch, TrainConfig(...))`.

    nas train runs/p1/best.json --dataset digits -o resolution=32 -o width_mult=0.35 --epochs 30 --out runs/t

Recipe: SGD (momentum 0.9, Nesterov) with a linear warm-up then cosine decay of the learning rate per
step, label smoothing, weight decay on weights only (not norms or biases), random-crop (+ flip for
natural images) augmentation, optional mixed precision. The net is built for the dataset's classes
and trained at the (possibly overridden) space options; the result records what differs from the
searched ones. Accuracy is measured on the dataset's held-out split (never trained on).

Under torchrun every rank trains its shard with DistributedDataParallel; `batch_size` is the global
batch, split evenly, and each epoch's last partial batch is dropped, so N processes take exactly the
batches of one process (the gradient is the same mean; only BatchNorm sees per-rank batch statistics). Only rank 0 writes:
`checkpoint.pt` after each epoch (atomic), then `model.pt` (`nas.deploy.export.load_model`), `model.onnx`
(dynamic batch, checked equal to torch) and `result.json`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.core.arch import Arch
from nas.training.distributed import DistContext
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace
from nas.training.run_files import (CHECKPOINT, MODEL_ONNX, MODEL_PT, RESULT,  # noqa: F401  (public here too)
                                     load_checkpoint as _load_checkpoint, out_lock as _out_lock, prepare_out,
                                     save_atomic as _save_atomic, write_outputs as _write_outputs)

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe. `batch_size` is global (split over the ranks); `lr` is the peak rate."""

    dataset: str = "digits"
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    label_smoothing: float = 0.1
    warmup_epochs: float = 1.0
    augment: str = "auto"
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    train_samples: int | None = None
    val_samples: int | None = None

    def check(self, world_size: int = 1) -> None:
        from nas.training.augment import MODES
        for name, low in (("epochs", 1), ("batch_size", 1)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                raise UsageError(f"{name} must be a whole number >= {low}, got {getattr(self, name)!r}")
        for name, low, high in (("lr", 1e-12, 100.0), ("weight_decay", 0.0, 1.0), ("momentum", 0.0, 0.999),
                                ("label_smoothing", 0.0, 0.99), ("warmup_epochs", 0.0, float(self.epochs))):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and low <= v <= high):
                raise UsageError(f"{name} must be in [{low:g}, {high:g}], got {v!r}")
        if self.augment not in MODES:
            raise UsageError(f"unknown augmentation {self.augment!r}; valid: {', '.join(MODES)}")
        if self.batch_size % world_size:
            raise UsageError(f"batch size {self.batch_size} does not divide over {world_size} processes; "
                             f"use a multiple of {world_size}")

    def recipe(self) -> dict[str, Any]:
        """The settings a resumed run must share with the checkpoint (all but the epoch count and device)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("epochs", "device")}


@dataclass(frozen=True)
class TrainResult:
    """What `train_arch` produced. `history`: per epoch lr, train loss, val accuracy/loss, samples seen."""

    space: str
    arch: str
    space_options: dict[str, Any]
    searched_options: dict[str, Any]
    config: TrainConfig
    accuracy: float
    val_loss: float
    epochs: int
    seconds: float
    world_size: int
    params_m: float
    history: tuple[dict[str, float], ...] = ()
    files: dict[str, str] = field(default_factory=dict)
    onnx_max_abs_diff: dict[int, float] = field(default_factory=dict)
    init_tensors: tuple[int, int] | None = None   # (loaded, of all) when started from given weights
    schedule_changes: tuple[dict[str, int], ...] = ()   # --resume with another --epochs: where and from/to

    @property
    def differs(self) -> dict[str, list[Any]]:
        """Space options trained at other values than searched: {name: [searched, trained]}."""
        keys = sorted(set(self.space_options) | set(self.searched_options))
        return {k: [self.searched_options.get(k), self.space_options.get(k)] for k in keys
                if self.searched_options.get(k) != self.space_options.get(k)}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["config"] = dataclasses.asdict(self.config)
        d["differs_from_searched"] = self.differs
        d["history"] = list(self.history)
        return d


def training_space(space: SearchSpace, overrides: dict[str, Any], classes: int) -> SearchSpace:
    """`space` with the option overrides and the dataset's number of classes."""
    from search_spaces.catalog import get_space
    opts = {**space.options(), **overrides}
    if "num_classes" in opts:
        opts["num_classes"] = classes
    return get_space(space.name, **opts)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up from peak/warmup to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _load_matching(model: "nn.Module", state: dict[str, Any]) -> tuple[int, int]:
    """Copy the tensors of `state` whose name and shape match `model`'s; returns (copied, model's total)."""
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not take:
        raise UsageError("none of the given weights fit this net (other arch or space options?); "
                         "train from scratch with a best.json instead")
    model.load_state_dict(take, strict=False)
    log.info("started from given weights: %d of %d tensors (the rest random)", len(take), len(own))
    return len(take), len(own)


def _evaluate(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor", ctx: DistContext, batch: int,
              amp: bool) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the held-out set, each rank taking every world_size-th sample."""
    import torch
    import torch.nn.functional as F
    idx = torch.arange(ctx.rank, len(y), ctx.world_size)
    model.eval()
    correct, loss = 0.0, 0.0
    dev = torch.device(ctx.device)
    with torch.no_grad(), torch.autocast(dev.type, enabled=amp, dtype=torch.bfloat16 if dev.type == "cpu" else torch.float16):
        for i in range(0, len(idx), batch):
            j = idx[i:i + batch]
            xb, yb = x[j].to(dev), y[j].to(dev)
            out = model(xb).float()
            loss += float(F.cross_entropy(out, yb, reduction="sum"))
            correct += float((out.argmax(1) == yb).sum())
    from nas.training.distributed import all_sum
    correct, loss, n = all_sum(ctx, [correct, loss, float(len(idx))])
    return correct / max(n, 1.0), loss / max(n, 1.0)


def train_arch(space: SearchSpace, arch: Arch, config: TrainConfig | None = None, *, out: str | Path | None = None,
               overrides: dict[str, Any] | None = None, resume: bool = False, progress: bool | None = None,
               ctx: DistContext | None = None, init: dict[str, Any] | None = None) -> TrainResult:
    """Train `arch` of `space` (the searched space) from scratch; see the module docstring.

    `overrides`: space options to train at instead of the searched ones (e.g. {"resolution": 32}).
    `out`: folder for checkpoint.pt, model.pt, model.onnx, result.json (None: nothing written).
    `resume`: continue from out/checkpoint.pt (which must come from the same settings).
    `ctx`: the distributed context (nas.training.distributed.setup); None trains in this process alone.
    `init`: a state dict to start from instead of random weights (fine-tuning, e.g. a supernet's
    inherited subnet); tensors whose shape differs (a classifier for other classes) stay random."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    import nas.training.augment as aug
    import nas.training.distributed as D
    from nas.training.data import load_dataset, num_classes
    from nas.training.loops import step_bar
    cfg = config or TrainConfig()
    ctx = ctx or DistContext(device=D.check_device(cfg.device))
    cfg.check(ctx.world_size)
    space.validate(arch)
    out_dir = prepare_out(out) if out is not None else None
    ck_path = out_dir / CHECKPOINT if out_dir is not None else None
    if ck_path is not None and ck_path.exists() and not resume:
        raise UsageError(f"{out_dir} holds a checkpoint of an earlier run; pass --resume to continue it "
                         f"or choose another --out")
    if resume and ck_path is None:
        raise UsageError("--resume needs the --out folder of the run to continue")
    if resume and ck_path is not None and not ck_path.exists():
        raise UsageError(f"--resume: no {CHECKPOINT} in {out_dir}; nothing to resume (drop --resume to start)")

    classes = num_classes(cfg.dataset)
    tspace = training_space(space, dict(overrides or {}), classes)
    tspace.validate(arch)
    res = tspace.input_shape[-1]
    from nas.training.memory import check_memory   # before any allocation: one line with the sizes
    check_memory(tspace, arch, cfg.dataset, cfg.batch_size, ctx.device, cfg.train_samples)
    xtr, ytr = load_dataset(cfg.dataset, split="train", seed=cfg.seed, resolution=res, limit=cfg.train_samples)
    xva, yva = load_dataset(cfg.dataset, split="val", seed=cfg.seed, resolution=res, limit=cfg.val_samples)
    if tuple(xtr.shape[1:]) != tuple(tspace.input_shape):
        raise UsageError(f"dataset {cfg.dataset!r} gives {tuple(xtr.shape[1:])} inputs; {tspace.describe()} "
                         f"takes {tuple(tspace.input_shape)}")
    aug_mode = aug.resolve(cfg.augment, cfg.dataset)
    dev = torch.device(ctx.device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = tspace.build(arch, num_classes=classes).to(dev)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.amp and dev.type == "cuda")
    start, history, seconds = 0, [], 0.0
    changes: list[dict[str, int]] = []   # --resume with another --epochs: the schedule was re-stretched here
    init_tensors = _load_matching(model, init) if init is not None else None
    if resume and ck_path is not None:
        ck = _load_checkpoint(ck_path, tspace, arch, cfg, ctx.world_size)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        start, history, seconds = int(ck["epoch"]), list(ck["history"]), float(ck["seconds"])
        if cfg.epochs < start:
            raise UsageError(f"--epochs {cfg.epochs}: the checkpoint {ck_path} already has {start} epochs; give "
                             f"--epochs {start} (export it again) or more (train on)")
        planned = ck.get("epochs")   # the schedule's length (absent in checkpoints of older versions)
        changes = list(ck.get("schedule_changes", []))
        if planned is not None and int(planned) != cfg.epochs:
            changes.append({"after_epoch": start, "epochs_from": int(planned), "epochs_to": cfg.epochs})
        log.info("resuming %s after epoch %d", ck_path, start)
    net: Any = model
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    per_rank = cfg.batch_size // ctx.world_size
    shard_len = len(D.shard_indices(len(ytr), 0, cfg.seed, ctx.rank, ctx.world_size))
    # drop the last partial batch (a batch of 1 breaks BatchNorm); N ranks then take exactly one process's batches
    steps = shard_len // per_rank
    if steps == 0:
        raise UsageError(f"{len(ytr)} training samples make no batch of {cfg.batch_size}; lower --batch-size")
    total, warmup = cfg.epochs * steps, int(round(cfg.warmup_epochs * steps))
    if changes and changes[-1]["after_epoch"] == start and start > 0 and history:
        c = changes[-1]
        log.warning("--epochs %d changes the run of %s from %d to %d epochs after epoch %d: the cosine schedule is "
                    "re-stretched over %d epochs (the learning rate goes from %.3g at the end of epoch %d to %.3g); "
                    "result.json records it under schedule_changes", cfg.epochs, ck_path, c["epochs_from"],
                    cfg.epochs, start, cfg.epochs, float(history[-1]["lr"]), start,
                    lr_at(start * steps, total, warmup, cfg.lr))
    autocast_dtype = torch.bfloat16 if dev.type == "cpu" else torch.float16
    acc, val_loss = math.nan, math.nan
    # the global torch RNG (dropout, stochastic depth) is reseeded per epoch, so a resumed run repeats the
    # uninterrupted one exactly; fork_rng gives the caller its RNG state back afterwards
    rng_scope = contextlib.ExitStack()
    rng_scope.enter_context(torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []))
    bar = tqdm(total=total, initial=start * steps, desc="train", unit="step", leave=False,
               disable=(None if progress is None else not progress) if ctx.is_main else True)
    try:
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            idx = D.shard_indices(len(ytr), epoch, cfg.seed, ctx.rank, ctx.world_size)
            epoch_seed = int(np.random.SeedSequence([cfg.seed, epoch, ctx.rank]).generate_state(1)[0])
            gen = torch.Generator().manual_seed(epoch_seed)
            torch.manual_seed(epoch_seed + 1)
            net.train()
            running, seen = 0.0, 0
            for s in range(steps):
                lr = lr_at(epoch * steps + s, total, warmup, cfg.lr)
                for g in opt.param_groups:
                    g["lr"] = lr
                j = torch.from_numpy(idx[s * per_rank:(s + 1) * per_rank])
                xb, yb = aug.augment(xtr[j], aug_mode, gen).to(dev), ytr[j].to(dev)
                with torch.autocast(dev.type, enabled=cfg.amp, dtype=autocast_dtype):
                    loss = F.cross_entropy(net(xb).float(), yb, label_smoothing=cfg.label_smoothing)
                if not bool(torch.isfinite(loss.detach())):
                    raise NasError(f"training diverged: loss {float(loss.detach())} in epoch {epoch + 1} "
                                   f"(lr {lr:g}); lower --lr")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                running += float(loss.detach()) * len(yb)
                seen += len(yb)
                step_bar(bar, loss=running / seen)   # this epoch's running mean (this rank's batches)
            everyone = D.gather_indices(ctx, idx[:steps * per_rank])   # the samples this epoch visited
            loss_sum, seen_all = D.all_sum(ctx, [running, float(seen)])
            D.sync_buffers(ctx, model)
            acc, val_loss = _evaluate(model, xva, yva, ctx, max(per_rank, 256), cfg.amp)
            seconds += time.perf_counter() - t0
            distinct = len(np.unique(everyone))
            if distinct != len(everyone):
                raise NasError(f"epoch {epoch + 1}: {len(everyone) - distinct} samples were seen twice (shard bug)")
            history.append({"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(seen_all, 1.0),
                            "val_accuracy": acc, "val_loss": val_loss, "seen": int(seen_all), "distinct": distinct,
                            "seconds": seconds})
            log.info("epoch %d/%d: train loss %.4f, val accuracy %.4f", epoch + 1, cfg.epochs,
                     history[-1]["train_loss"], acc)
            if ck_path is not None and ctx.is_main:
                _save_atomic({"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scaler": scaler.state_dict(), "history": history, "seconds": seconds,
                              "space": tspace.name, "space_options": tspace.options(), "arch": arch.to_dict(),
                              "recipe": cfg.recipe(), "world_size": ctx.world_size, "epochs": cfg.epochs,
                              "schedule_changes": changes}, ck_path)
            D.barrier(ctx)
    finally:
        bar.close()
        rng_scope.close()
    if start >= cfg.epochs:  # resumed a finished run: measure again, export again
        D.sync_buffers(ctx, model)
        acc, val_loss = _evaluate(model, xva, yva, ctx, max(per_rank, 256), cfg.amp)
    result = TrainResult(space=space.name, arch=space.format(arch), space_options=tspace.options(),
                         searched_options=space.options(), config=cfg, accuracy=acc, val_loss=val_loss,
                         epochs=cfg.epochs, seconds=seconds, world_size=ctx.world_size, params_m=params_m,
                         history=tuple(history), init_tensors=init_tensors, schedule_changes=tuple(changes))
    if out_dir is not None and ctx.is_main:
        result = _write_outputs(out_dir, tspace, arch, model, result)
    D.barrier(ctx)
    return result


def load_target(result: str | None = None, space: str | None = None, arch: str | None = None,
                space_options: dict[str, Any] | None = None
                ) -> tuple[SearchSpace, Arch, dict[str, Any], dict[str, Any] | None]:
    """(searched space, arch, option overrides, initial weights or None) from a result file, a .pt
    (its weights are the starting point) or --space/--arch."""
    from search_spaces.catalog import get_space
    overrides = dict(space_options or {})
    space_name = space
    init = None
    if result is not None and str(result).endswith(".pt"):   # fine-tune exported weights
        from nas.deploy.export import load_torch
        sp, a, model = load_torch(result)
        init = {k: v.detach() for k, v in model.state_dict().items()}
    elif result is not None:
        from nas.deploy.export import load_result
        sp, a, _ = load_result(result)
    if result is not None:
        if arch is not None:
            raise UsageError("give either a result file or --arch, not both")
        if space_name is not None and space_name != sp.name:
            raise UsageError(f"{result} holds a {sp.name} arch, but --space is {space_name!r}; "
                             f"drop --space or use a {space_name} result")
        return sp, a, overrides, init
    if space_name is None or arch is None:
        raise UsageError("give a result file (best.json of 'nas search') or both --space and --arch")
    sp = get_space(space_name, **overrides)
    return sp, sp.parse_any(arch), {}, None


def run_training(result: str | None = None, *, space: str | None = None, arch: str | None = None,
                 space_options: dict[str, Any] | None = None, out: str | None = None, resume: bool = False,
                 progress: bool = True, torch_threads: int | None = None, **config: Any) -> Any:
    """Train an arch from scratch (a best.json, a .pt to fine-tune, or `space` + `arch`) with the
    standard recipe (`config`: TrainConfig fields); exports model.pt / model.onnx to `out`. `nas.api.train`
    and the Ray actors of `nas train --runner ray` run this. Under torchrun, data parallel; returns the TrainResult on rank 0 and None on the others."""
    import nas.training.distributed as D
    from nas.training.threads import set_torch_threads
    sp, a, overrides, init = load_target(result, space, arch, dict(space_options or {}))
    cfg = TrainConfig(**config)
    D.check_device(cfg.device)
    set_torch_threads(torch_threads)
    ctx = D.setup(cfg.device)
    try:
        with _out_lock(out if ctx.is_main else None):
            res = train_arch(sp, a, cfg, out=out, overrides=overrides, resume=resume, progress=progress, ctx=ctx,
                             init=init)
    finally:
        D.teardown(ctx)
    return res if ctx.is_main else None
