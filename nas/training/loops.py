"""Short training from scratch: `train_eval`, `evaluate`, `recalibrate_bn` and the progress-bar step.

The loops every trainer shares (the `train` evaluator, the supernet and differentiable trainers,
`nas train`). `train_eval` trains a model for a few epochs (SGD with Nesterov momentum, or AdamW;
optional linear warm-up, then cosine decay of the learning rate per step to zero; optional gradient-norm
clipping and an EMA of the weights for evaluation) and reports validation accuracy and loss.
"""
from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from nas.core.errors import NasError, UsageError

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

log = logging.getLogger(__name__)
OPTIMIZERS = ("sgd", "adamw")
DEFAULT_LR = {"sgd": 0.05, "adamw": 2e-3}
DEFAULT_WD = {"sgd": 5e-4, "adamw": 0.05}
Split = tuple["torch.Tensor", "torch.Tensor"]


class TrainingError(NasError):
    """Training could not go on (e.g. the loss became NaN); the trial fails with this message."""


def step_bar(bar: Any, **values: float) -> None:
    """Advance a tqdm `bar` by one step showing `values` (e.g. the epoch's running mean loss so far).
    Every trainer's bar goes through here: the postfix is set *before* the update, so whatever the
    update draws is this step's value (setting it after, as tqdm's examples do, always shows the
    step before, and a per-epoch postfix shows the last epoch's loss for the whole next epoch)."""
    bar.set_postfix({k: f"{v:.3f}" for k, v in values.items()}, refresh=False)
    bar.update(1)


def _check(name: str, value: float, low: float, what: str, below: float = float("inf")) -> None:
    """`value` in [low, below), else one line naming it (NaN fails too)."""
    if not low <= value < below:
        raise UsageError(f"{name} must be {what}, got {value}")


def lr_factor(step: int, total: int, warmup_steps: int = 0) -> float:
    """The learning-rate multiplier for optimizer step `step` (0-based) of `total`: linear warm-up
    (step + 1) / warmup_steps for the first `warmup_steps` steps, then cosine decay from 1 to 0 over the rest
    (warmup_steps 0: the plain cosine, 0.5 * (1 + cos(pi * step / total)))."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, span) / span))


class WeightEma:
    """Exponential moving average of a model's parameters: update n (1-based) is
    ema = d_n * ema + (1 - d_n) * weights with d_n = min(decay, (n - 1) / n), so early updates are a plain
    mean of the weights so far rather than dragging in the initial weights. `copy_to(model)` loads the
    average; BatchNorm running statistics are then stale, so recalibrate them (`recalibrate_bn`)."""

    def __init__(self, model: "nn.Module", decay: float) -> None:
        self.decay = float(decay)
        self.params = [p.detach().clone() for p in model.parameters()]
        self.n = 0

    def update(self, model: "nn.Module") -> None:
        import torch
        self.n += 1
        d = min(self.decay, (self.n - 1) / self.n)
        with torch.no_grad():
            for e, p in zip(self.params, model.parameters()):
                e.mul_(d).add_(p.detach(), alpha=1 - d)

    def copy_to(self, model: "nn.Module") -> None:
        import torch
        with torch.no_grad():
            for e, p in zip(self.params, model.parameters()):
                p.copy_(e)


def evaluate(model: "nn.Module", data: Split, batch_size: int = 256, device: str = "cpu") -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on in-memory (x, y)."""
    import torch
    import torch.nn.functional as F

    from nas.training.data import make_loader
    model.eval()
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in make_loader(*data, batch_size=batch_size, shuffle=False):
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += len(y)
    return correct / max(n, 1), loss / max(n, 1)


def recalibrate_bn(model: "nn.Module", data: Split, batch_size: int = 64, batches: int = 20,
                   device: str = "cpu", seed: int = 0) -> None:
    """Recompute BatchNorm running statistics as exact averages over `batches` training batches.

    After a few hundred steps the exponential running averages still remember the first
    batches' statistics, so eval-mode accuracy of a briefly trained net is mostly noise; exact
    statistics of the final weights fix that (as done for sub-nets of supernets)."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    from nas.training.data import make_loader
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(make_loader(*data, batch_size=batch_size, shuffle=True, seed=seed + 7919)):
            if i == batches:
                break
            model(x.to(device))
    for m, mom in zip(bns, momenta):
        m.momentum = mom


def train_eval(model: "nn.Module", train: Split, val: Split, epochs: int = 1, batch_size: int = 64,
               lr: float | None = None, device: str = "cpu", seed: int = 0, progress: bool | None = None, *,
               optimizer: str = "sgd", weight_decay: float | None = None,
               label_smoothing: float = 0.0, warmup: float = 0.0, clip_grad: float = 0.0,
               ema: float = 0.0) -> dict[str, float]:
    """Train `model` on `train` = (x, y) for `epochs`, then measure it on `val`.

    `warmup`: epochs (fractions allowed) of linear LR warm-up before the cosine (`lr_factor`); `clip_grad`:
    clip the gradient's global L2 norm to this before every step (0: off); `ema`: decay of an EMA of the
    weights (`WeightEma`) that replaces the final weights before BN recalibration and evaluation (0: off).
    All three off (the defaults) is exactly the plain protocol.

    Returns {"accuracy", "loss" (validation cross-entropy), "train_loss" (last epoch's mean),
    "train_seconds"}. Shuffling and any dropout draw from `seed` (the global torch RNG is restored
    afterwards). `progress`: a tqdm bar per run (None: only on a terminal)."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from nas.training.data import make_loader
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
    _check("epochs", epochs, 1, "a positive number of epochs")
    _check("batch_size", batch_size, 1, "positive")
    lr = DEFAULT_LR[optimizer] if lr is None else float(lr)
    _check("lr", lr, 1e-12, "positive")
    wd = DEFAULT_WD[optimizer] if weight_decay is None else float(weight_decay)
    _check("warmup", warmup, 0, "a non-negative number of epochs")
    _check("clip_grad", clip_grad, 0, "a non-negative gradient norm (0: off)")
    _check("label_smoothing", label_smoothing, 0, "in [0, 1)", below=1)
    _check("ema", ema, 0, "in [0, 1)", below=1)
    model = model.to(device)
    # no weight decay on norms and biases (the usual recipe; decaying LN/BN gains hurts short runs)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    opt: torch.optim.Optimizer = (torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True) if optimizer == "sgd"
                                  else torch.optim.AdamW(groups, lr=lr))
    steps_per_epoch = math.ceil(len(train[1]) / batch_size)
    total = max(1, int(epochs) * steps_per_epoch)
    warm = min(total, round(warmup * steps_per_epoch))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warm))
    averager = WeightEma(model, ema) if ema > 0 else None
    fork = [] if torch.device(device).type == "cpu" else [torch.device(device).index or 0]
    t0 = time.perf_counter()
    train_loss = math.nan
    with torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        bar = tqdm(total=total, desc="train", unit="step", leave=False, disable=None if progress is None else not progress)
        try:
            for epoch in range(int(epochs)):
                model.train()
                running, seen = 0.0, 0
                for x, y in make_loader(*train, batch_size=batch_size, shuffle=True, seed=seed + epoch):
                    x, y = x.to(device), y.to(device)
                    loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
                    if not bool(torch.isfinite(loss.detach())):
                        raise TrainingError(f"training diverged: loss {float(loss.detach())} in epoch {epoch + 1} "
                                            f"(lr {lr:g}); lower the learning rate")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if clip_grad > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
                    opt.step()
                    if averager is not None:
                        averager.update(model)
                    sched.step()
                    running += float(loss.detach()) * len(y)
                    seen += len(y)
                    step_bar(bar, loss=running / seen)
                train_loss = running / max(seen, 1)
        finally:
            bar.close()
        if averager is not None:
            averager.copy_to(model)
        recalibrate_bn(model, train, batch_size=batch_size, device=device, seed=seed)
    seconds = time.perf_counter() - t0
    acc, val_loss = evaluate(model, val, device=device)
    if not math.isfinite(val_loss):
        raise TrainingError(f"training diverged: validation loss {val_loss} after {epochs} epochs "
                            f"(lr {lr:g}); lower the learning rate")
    return {"accuracy": acc, "loss": val_loss, "train_loss": train_loss, "train_seconds": seconds}
