"""The `train` evaluator: score an arch by training it briefly from scratch.

    nas search --evaluator train --evaluator-option epochs=1 --evaluator-option dataset=digits

The evaluator builds each arch for the dataset's classes at the dataset's resolution, trains it with
`nas.training.loops.train_eval` and returns the accuracy as both `accuracy` and `score`. A few epochs
rank archs well enough to steer a search; they are not final accuracies.
"""
from __future__ import annotations

import inspect
from typing import Any

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace
from nas.training.loops import OPTIMIZERS, _check, train_eval


class TrainEvaluator:
    """Evaluate an arch by training it briefly on `dataset` (see nas.training.data for the specs)."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, dataset: str = "digits", epochs: int = 1,
                 batch_size: int = 64, lr: float | None = None, optimizer: str = "sgd",
                 weight_decay: float | None = None, resolution: int | None = None, device: str = "cpu",
                 train_samples: int | None = None, val_samples: int | None = None,
                 progress: bool | None = None) -> None:
        from nas.training.data import load_dataset, num_classes
        from search_spaces.catalog import get_space
        if optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        _check("epochs", epochs, 1, "a positive number of epochs")
        self.space, self.seed, self.dataset = space, int(seed), dataset
        self.kwargs: dict[str, Any] = {"epochs": int(epochs), "batch_size": int(batch_size), "lr": lr,
                                       "optimizer": optimizer, "weight_decay": weight_decay,
                                       "device": device, "progress": progress}
        self.num_classes = num_classes(dataset)
        self.train = load_dataset(dataset, split="train", seed=self.seed, resolution=resolution, limit=train_samples)
        self.val = load_dataset(dataset, split="val", seed=self.seed, resolution=resolution, limit=val_samples)
        shape = tuple(self.train[0].shape[1:])
        opts = space.options()
        self.train_space = space
        if tuple(space.input_shape) != shape:
            if "resolution" not in opts or shape[1] != shape[2]:
                raise UsageError(f"dataset {dataset!r} gives {shape} inputs but space {space.name} takes "
                                 f"{tuple(space.input_shape)} and has no resolution option")
            try:
                self.train_space = get_space(space.name, **{**opts, "resolution": shape[1]})
            except UsageError as exc:
                raise UsageError(f"cannot train {space.name} on {dataset!r} at resolution {shape[1]}: {exc}; "
                                 f"pick another resolution with --evaluator-option resolution=N") from None

    def __call__(self, arch: Arch) -> dict[str, float]:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.train_space.build(arch, num_classes=self.num_classes)
        params = sum(p.numel() for p in model.parameters())
        out = train_eval(model, self.train, self.val, seed=self.seed, **self.kwargs)
        return {"score": out["accuracy"], **out, "params_m": params / 1e6, "macs_m": self.space.macs(arch) / 1e6}


    def quantized(self, arch: Arch, calibration_images: int = 128) -> dict[str, Any]:
        """Train `arch` as `__call__` does (same seed, so the same weights up to thread nondeterminism),
        then quantize it statically to int8 (calibrated on training images) and score both files on
        the held-out split (`nas search --quantize-top K`)."""
        import torch

        from latency.quantize import Calibration
        from nas.deploy.quantized import int8_accuracy
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self.train_space.build(arch, num_classes=self.num_classes)
        out = train_eval(model, self.train, self.val, seed=self.seed, **self.kwargs)
        calib = Calibration(self.dataset, self.train[0][:calibration_images].numpy())
        q = int8_accuracy(model.eval(), tuple(self.train_space.input_shape), calib, self.val[0].numpy(),
                          self.val[1].numpy())
        return {"accuracy": out["accuracy"], **q}


def make_train_evaluator(space: SearchSpace, seed: int = 0, **options: Any) -> TrainEvaluator:
    valid = [p for p in inspect.signature(TrainEvaluator.__init__).parameters if p not in ("self", "space", "seed")]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(f"train evaluator has no option {bad[0]!r}; valid options: {', '.join(valid)}")
    return TrainEvaluator(space, seed=seed, **options)
