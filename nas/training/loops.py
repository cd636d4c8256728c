"""Short training from scratch: `train_eval`, `evaluate`, `recalibrate_bn` and the progress-bar step.

The loops every trainer shares (the `train` evaluator, the supernet and differentiable trainers,
`nas train`). `train_eval` trains a model for a few epochs (SGD with Nesterov momentum, or AdamW;
cosine decay of the learning rate per step to zero) and reports validation accuracy and loss.
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


def _check(name: str, value: float, low: float, what: str) -> None:
    if not value >= low:
        raise UsageError(f"{name} must be {what}, got {value}")


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
               label_smoothing: float = 0.0) -> dict[str, float]:
    """Train `model` on `train` = (x, y) for `epochs`, then measure it on `val`.

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
    model = model.to(device)
    # no weight decay on norms and biases (the usual recipe; decaying LN/BN gains hurts short runs)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    opt: torch.optim.Optimizer = (torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True) if optimizer == "sgd"
                                  else torch.optim.AdamW(groups, lr=lr))
    steps_per_epoch = math.ceil(len(train[1]) / batch_size)
    total = max(1, int(epochs) * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
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
                    opt.step()
                    sched.step()
                    running += float(loss.detach()) * len(y)
                    seen += len(y)
                    step_bar(bar, loss=running / seen)
                train_loss = running / max(seen, 1)
        finally:
            bar.close()
        recalibrate_bn(model, train, batch_size=batch_size, device=device, seed=seed)
    seconds = time.perf_counter() - t0
    acc, val_loss = evaluate(model, val, device=device)
    if not math.isfinite(val_loss):
        raise TrainingError(f"training diverged: validation loss {val_loss} after {epochs} epochs "
                            f"(lr {lr:g}); lower the learning rate")
    return {"accuracy": acc, "loss": val_loss, "train_loss": train_loss, "train_seconds": seconds}
