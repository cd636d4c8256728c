"""Supernet training with the sandwich rule, BN recalibration, and the `supernet` evaluator.

Training (Yu & Huang 2019, "Universally Slimmable Networks", Sec. 3.2; BigNAS, Yu et al. 2020):
every step runs the largest path, the smallest path and `random_paths` uniformly sampled paths on
the same batch, accumulates their gradients and takes one optimizer step. With `distill` the
smaller paths also learn the largest path's (detached) predictions - in-place distillation.

Optimizer and sampling (issue 30: with SGD for a few hundred steps the supernets stayed at chance):
`optimizer` SGD (Nesterov) or AdamW, `warmup` steps of linear warm-up then cosine decay to 0; `sampling`
"sandwich", "uniform" (SPOS) or "fair" (FairNAS), `nas.supernet.sampling`; None: the supernet's own.

Scoring a path (Guo et al. 2020, "Single Path One-Shot", Sec. 3.3): shared BN statistics belong to
no path in particular, so before a path is scored its BN running statistics are reset and
re-estimated on a few fixed training batches in train mode (cumulative average), then accuracy is
measured on held-out data in eval mode. `SupernetEvaluator` does that per arch; it is what the
evolution over a trained supernet maximises.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace
from nas.supernet.sampling import OPTIMIZERS, SAMPLINGS, lr_factor, resolve_sampling, step_paths

log = logging.getLogger(__name__)
Data = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SandwichConfig:
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.05                 # SGD + Nesterov momentum, cosine decay to 0 over all steps
    momentum: float = 0.9
    weight_decay: float = 3e-5
    random_paths: int = 2            # uniformly sampled paths per step, besides largest and smallest
    distill: bool = True             # in-place distillation from the largest path
    grad_clip: float = 5.0
    seed: int = 0
    optimizer: str = "sgd"           # OPTIMIZERS
    warmup: int = 0                  # steps of linear warm-up before the cosine decay
    sampling: str | None = None      # SAMPLINGS; None: the supernet's own

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown supernet optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if self.sampling is not None and self.sampling not in SAMPLINGS:
            raise UsageError(f"unknown supernet sampling {self.sampling!r}; valid samplings: {', '.join(SAMPLINGS)}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise UsageError(f"warmup must be a whole number of steps >= 0, got {self.warmup!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"supernet training needs {name} >= 1, got {getattr(self, name)}")
        if self.random_paths < 0:
            raise UsageError(f"random_paths must be >= 0, got {self.random_paths}")
        if not self.lr > 0:
            raise UsageError(f"lr must be positive, got {self.lr}")


# ---- data helpers ------------------------------------------------------------------------------
@contextlib.contextmanager
def flush_denormal() -> Iterator[None]:
    """Flush denormal floats to zero on CPU while training/evaluating: tiny values (e.g. from
    zero-initialised residual BN scales) otherwise make x86 float math several times slower."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)   # torch's default


def batch_indices(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """A seeded shuffle of range(n) in batches (the last one may be smaller; batches of 1 are dropped,
    BatchNorm cannot train on them)."""
    order = rng.permutation(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        if len(idx) > 1:
            yield idx


def to_device(model: nn.Module, device: str) -> nn.Module:
    try:
        return model.to(torch.device(device))
    except (RuntimeError, AssertionError) as exc:
        raise UsageError(f"cannot use device {device!r}: {exc}") from None


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    with flush_denormal():
        for i in range(0, len(y), batch_size):
            out = model(x[i:i + batch_size].to(device))
            correct += int((out.argmax(1).cpu() == y[i:i + batch_size]).sum())
    return correct / max(1, len(y))


def bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _size_note(trained: SearchSpace, searched: SearchSpace) -> str:
    """' at proxy size channels=8, resolution=16' (the options where training differs), or ''."""
    there = searched.options()
    diff = [f"{k}={v}" for k, v in trained.options().items() if k != "num_classes" and there.get(k) != v]
    return f" at proxy size {', '.join(diff)}" if diff else ""


@torch.no_grad()
def recalibrate_bn(model: nn.Module, x: torch.Tensor, batches: int = 8, batch_size: int = 64) -> None:
    """Reset every BN's running statistics and re-estimate them as the cumulative average over the
    first `batches` batches of `x` (forward passes in train mode, no gradients); leaves eval mode."""
    if batches < 1:
        raise UsageError(f"BN recalibration needs at least 1 batch, got {batches}")
    bns = bn_modules(model)
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    device = next(model.parameters()).device
    model.train()
    with flush_denormal():
        try:
            for i in range(batches):
                xb = x[i * batch_size:(i + 1) * batch_size]
                if len(xb) < 2:
                    break
                model(xb.to(device))
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            model.eval()


def _kd_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(logits, 1), F.softmax(teacher, 1), reduction="batchmean")


# ---- training ----------------------------------------------------------------------------------
def sandwich_step(supernet: Any, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
                  paths: Sequence[Arch], distill: bool = True, grad_clip: float = 5.0,
                  sync: Callable[[], None] | None = None) -> float:
    """One sandwich-rule step: gradients of every path in `paths` (the first is the teacher when
    distilling) accumulated, then one optimizer step. Returns the mean loss over the paths.
    `sync`: called on the accumulated gradients before clipping (data parallel: sum over the ranks)."""
    supernet.train()
    optimizer.zero_grad(set_to_none=True)
    teacher = None
    total = 0.0
    with flush_denormal():
        for i, arch in enumerate(paths):
            supernet.set_arch(arch)
            out = supernet(xb)
            loss = F.cross_entropy(out, yb)
            if distill and teacher is not None:
                loss = 0.5 * loss + 0.5 * _kd_loss(out, teacher)
            if i == 0:
                teacher = out.detach()
            (loss / len(paths)).backward()
            total += float(loss.detach())
        if sync is not None:
            sync()
        if grad_clip:
            nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
        optimizer.step()
    return total / len(paths)


def train_supernet(supernet: Any, train: Data, cfg: SandwichConfig, val: Data | None = None,
                   progress: bool = False, calib_batches: int = 4,
                   on_epoch: Callable[[dict[str, float]], None] | None = None,
                   dist: Any = None, checkpoint: Any = None) -> list[dict[str, float]]:
    """Train with the sandwich rule for `cfg.epochs`; returns one record per epoch (loss, samples
    trained on and how many distinct and, with `val`, BN-recalibrated accuracy of the largest and
    smallest paths). The paths of a step follow `cfg.sampling` (None: the supernet's own `sampling`, e.g.
    "uniform" for cell supernets: `max(1, random_paths)` uniform paths, no distillation). `dist` (nas.training.distributed.DistContext): data
    parallel under torchrun - same batches and paths on every rank, each its slice, summed gradients.
    `checkpoint` (nas.training.resume.StepCheckpoint): saves the loop state every N steps and epoch, and
    continues from it when it holds one."""
    from tqdm import tqdm

    from nas.training.resume import BatchCursor, StepCheckpoint, seen_load, seen_state

    import nas.training.distributed as D
    from nas.training.loops import step_bar
    dist = dist or D.DistContext()
    x, y = train
    rng = np.random.default_rng([cfg.seed, 0x5A4D])
    device = next(supernet.parameters()).device
    params = [p for p in supernet.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]   # no weight decay on BN affine parameters
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt: torch.optim.Optimizer = (torch.optim.AdamW(groups, lr=cfg.lr) if cfg.optimizer == "adamw" else
                                  torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True))
    steps = cfg.epochs * max(1, sum(1 for _ in batch_indices(len(y), cfg.batch_size, np.random.default_rng(0))))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, cfg.warmup))
    sampling = resolve_sampling(supernet, cfg.sampling)
    ck = checkpoint or StepCheckpoint(None, {})
    back = ck.attach(rng, steps, net=supernet, opt=opt, sched=sched)
    history: list[dict[str, float]] = list(back.history) if back else []
    step = back.step if back else 0
    bar = tqdm(total=steps, initial=step, desc="supernet training", unit="step",
               disable=not progress or not dist.is_main)
    with bar, ck.guard():
        for epoch in range(back.epoch if back else 0, cfg.epochs):
            t0, loss_sum, n_steps, seen, local_sum = time.perf_counter(), 0.0, 0, [], 0.0
            batches = BatchCursor(len(y), cfg.batch_size, rng)
            loop = back.loop if back is not None and epoch == back.epoch else None
            if loop is not None:
                batches.load(loop["batches"])
                loss_sum, n_steps, local_sum = loop["loss_sum"], loop["n_steps"], loop["local_sum"]
                seen, t0 = seen_load(loop["seen"]), t0 - loop["seconds"]
            for idx in batches:
                paths = step_paths(supernet, sampling, cfg.random_paths, rng)
                part = D.batch_share(dist, idx)   # drawn after the paths: every rank's rng stays in step
                if part is None:
                    continue
                mine, share = part
                xb, yb = x[mine].to(device), y[mine].to(device)
                sync = (lambda: D.average_gradients(dist, params, share)) if dist.active else None  # noqa: B023
                loss = sandwich_step(supernet, opt, xb, yb, paths, cfg.distill and sampling == "sandwich", cfg.grad_clip, sync)
                loss_sum, n_steps = loss_sum + share * loss, n_steps + 1
                seen.append(mine)
                sched.step()
                local_sum += loss
                step += 1
                step_bar(bar, loss=local_sum / n_steps)   # this rank's running mean over the epoch so far
                ck.after_step(epoch, step, history, lambda: {  # noqa: B023
                    "batches": batches.state(), "loss_sum": loss_sum, "n_steps": n_steps,  # noqa: B023
                    "local_sum": local_sum, "seen": seen_state(seen),  # noqa: B023
                    "seconds": time.perf_counter() - t0})  # noqa: B023
            rec = {"epoch": epoch + 1, "loss": D.all_sum(dist, [loss_sum])[0] / max(1, n_steps),
                   "seconds": time.perf_counter() - t0, **D.epoch_samples(dist, seen)}
            if val is not None:
                calib = x[torch.from_numpy(np.random.default_rng([cfg.seed, 1]).permutation(len(y)))]
                for label, arch in (("largest", supernet.largest()), ("smallest", supernet.smallest())):
                    supernet.set_arch(arch)
                    recalibrate_bn(supernet, calib, calib_batches, cfg.batch_size)
                    rec[f"val_acc_{label}"] = accuracy(supernet, *val)
            log.info("supernet epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in rec.items()})
            history.append(rec)
            ck.save(epoch + 1, step, history)
            if on_epoch:
                on_epoch(rec)
    return history


# ---- evaluation --------------------------------------------------------------------------------
def count_params(space: SearchSpace, arch: Arch) -> int:
    """Parameters of ``space.build(arch)``, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = space.build(arch)
    return int(sum(p.numel() for p in model.parameters()))


class SupernetEvaluator:
    """Scores an arch by its supernet path: BN recalibrated on `calib_batches` fixed training
    batches, then top-1 accuracy on `val`. Metrics: accuracy (= score), params_m and macs_m of the
    arch in `report_space` (the searched space; default the supernet's own)."""

    def __init__(self, supernet: Any, calib: torch.Tensor, val: Data, *, calib_batches: int = 8,
                 batch_size: int = 64, report_space: SearchSpace | None = None) -> None:
        self.supernet, self.calib, self.val = supernet, calib, val
        self.calib_batches, self.batch_size = int(calib_batches), int(batch_size)
        self.report_space = report_space or supernet.space
        self.name = "supernet"
        self.score_is = ("held-out accuracy with the shared supernet weights, BN recalibrated"
                         + _size_note(supernet.space, self.report_space))
        if self.calib_batches < 1:
            raise UsageError(f"calib_batches must be >= 1, got {calib_batches}")

    def __call__(self, arch: Arch) -> dict[str, float]:
        net = self.supernet
        net.set_arch(net.space.validate(Arch(net.space.name, arch.genes)))
        recalibrate_bn(net, self.calib, self.calib_batches, self.batch_size)
        acc = accuracy(net, *self.val)
        return {"score": acc, "accuracy": acc, "params_m": count_params(self.report_space, arch) / 1e6,
                "macs_m": self.report_space.macs(arch) / 1e6}


def calibration_set(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed, seeded shuffle of the training images for BN recalibration (same batches every arch)."""
    return x[torch.from_numpy(np.random.default_rng([seed, 0xCA1]).permutation(len(x)))]


# ---- checkpoints -------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> Path:
    """Atomically save {meta, state_dict}; `meta` must be JSON-like (space, options, config, ...)."""
    import os
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from nas.core.files import hidden_temp
    tmp = hidden_temp(path, ".pt")
    try:
        torch.save({"meta": meta, "state_dict": model.state_dict()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"supernet checkpoint {path} does not exist (it is written by 'nas search --strategy "
                         f"supernet --out DIR' as DIR/supernet.pt)")
    from nas.training.resume import read_state
    blob = read_state(path)
    if "state_dict" not in blob:
        raise UsageError(f"{path} holds no trained weights (a training state? those end in .state.pt)")
    return blob["meta"], blob["state_dict"]


def supernet_meta(space: SearchSpace, train_space: SearchSpace, cfg: SandwichConfig, dataset: str) -> dict[str, Any]:
    return {"space": space.name, "space_options": space.options(), "train_options": train_space.options(),
            "config": asdict(cfg), "dataset": dataset}


def supernet_evaluator_from_checkpoint(space: SearchSpace, seed: int = 0, *, checkpoint: str | None = None,
                                       dataset: str | None = None, calib_batches: int = 8, batch_size: int = 64,
                                       device: str = "cpu") -> SupernetEvaluator:
    """The `supernet` evaluator factory: a trained supernet checkpoint scored on its dataset."""
    from nas.training.data import load_dataset
    from nas.supernet import build_supernet, training_space
    if not checkpoint:
        raise UsageError("the supernet evaluator needs checkpoint=PATH (a supernet.pt written by "
                         "'nas search --strategy supernet --out DIR'), e.g. "
                         "--evaluator-option checkpoint=DIR/supernet.pt")
    meta, state = load_checkpoint(checkpoint)
    if meta.get("space") != space.name:
        raise UsageError(f"checkpoint {checkpoint} holds a {meta.get('space')!r} supernet, not {space.name!r}")
    small = training_space(space, **meta["train_options"])
    net = build_supernet(small)
    net.load_state_dict(state)
    to_device(net, device)
    data = dataset or meta.get("dataset") or "digits"
    res = small.input_shape[-1]
    x_tr, _ = load_dataset(data, split="train", seed=seed, resolution=res)
    val = load_dataset(data, split="val", seed=seed, resolution=res)
    return SupernetEvaluator(net, calibration_set(x_tr, seed), val, calib_batches=calib_batches,
                             batch_size=batch_size, report_space=space)


class RetrainEvaluator:
    """Scores an arch by training it from scratch on `train_space` (`nas.evaluators.training.train_eval`) - how
    DARTS evaluates a derived cell. The trained state of each scored arch is kept in `keep` (for
    export). Metrics: accuracy (= score), val loss, params_m and macs_m in `report_space`."""

    name = "retrain"

    def __init__(self, train_space: SearchSpace, train: Data, val: Data, *, epochs: int = 2, batch_size: int = 64,
                 lr: float | None = None, seed: int = 0, device: str = "cpu", report_space: SearchSpace | None = None,
                 keep: dict[Arch, dict[str, Any]] | None = None, progress: bool | None = None) -> None:
        self.train_space, self.train, self.val = train_space, train, val
        self.epochs, self.batch_size, self.lr, self.seed, self.device = epochs, batch_size, lr, seed, device
        self.report_space = report_space or train_space
        self.keep = keep if keep is not None else {}
        self.progress = progress

    @property
    def score_is(self) -> str:
        return (f"held-out accuracy after training from scratch, {self.epochs} epochs"
                f"{_size_note(self.train_space, self.report_space)}")

    def __call__(self, arch: Arch) -> dict[str, float]:
        from nas.training.loops import train_eval
        sub = self.train_space.validate(Arch(self.train_space.name, arch.genes))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.train_space.build(sub)
        with flush_denormal():
            out = train_eval(model, self.train, self.val, epochs=self.epochs, batch_size=self.batch_size,
                             lr=self.lr, device=self.device, seed=self.seed, progress=self.progress)
        self.keep[arch] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return {"score": out["accuracy"], "accuracy": out["accuracy"], "val_loss": out["loss"],
                "train_seconds": out["train_seconds"], "params_m": count_params(self.report_space, arch) / 1e6,
                "macs_m": self.report_space.macs(arch) / 1e6}
