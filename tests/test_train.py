"""Short training: learns a learnable task, is seeded without touching global RNG state, fixes BN
statistics, and the `train` evaluator plugs into the search loop (a diverging run = failed trial)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from nas.training.data import load_dataset
from nas.core.errors import UsageError
from nas.evaluators.catalog import EVALUATORS, make_evaluator
from nas.pipeline.runner import run_search
from nas.strategies.catalog import STRATEGIES
from nas.training.loops import TrainingError, recalibrate_bn, train_eval
from search_spaces.catalog import get_space

TRAIN = load_dataset("synthetic:200", split="train", seed=0, resolution=8)
VAL = load_dataset("synthetic:200", split="val", seed=0, resolution=8)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(32, 10))


def test_train_eval_learns_and_is_seeded() -> None:
    net = small_net()
    state = torch.random.get_rng_state()
    a = train_eval(net, TRAIN, VAL, epochs=3, batch_size=32, lr=0.1, seed=1, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)  # global torch RNG untouched
    assert set(a) == {"accuracy", "loss", "train_loss", "train_seconds"}
    assert a["accuracy"] > 0.5                                 # chance is 0.1
    b = train_eval(small_net(), TRAIN, VAL, epochs=3, batch_size=32, lr=0.1, seed=1, progress=False)
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    c = train_eval(small_net(), TRAIN, VAL, epochs=3, batch_size=32, lr=1e-2, optimizer="adamw", seed=1, progress=False)
    assert c["accuracy"] > 0.5


def test_recalibrate_bn_gives_exact_statistics() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 4, 4) * 3 + 2
    bn = nn.BatchNorm2d(3)
    recalibrate_bn(nn.Sequential(bn), (x, torch.zeros(64, dtype=torch.long)), batch_size=16)
    torch.testing.assert_close(bn.running_mean, x.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    assert bn.momentum == 0.1  # restored


def test_bad_settings_raise() -> None:
    with pytest.raises(UsageError, match="valid optimizers: sgd, adamw"):
        train_eval(small_net(), TRAIN, VAL, optimizer="lbfgs")
    with pytest.raises(UsageError, match="epochs"):
        train_eval(small_net(), TRAIN, VAL, epochs=0)
    with pytest.raises(TrainingError, match="diverged"):
        train_eval(small_net(), TRAIN, VAL, lr=1e30, progress=False)


SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)


def test_train_evaluator_in_a_search(tmp_path: Path) -> None:
    assert "train" in EVALUATORS
    ev = make_evaluator("train", SPACE, seed=0, dataset="synthetic:40", epochs=1, batch_size=20, resolution=32,
                        val_samples=20, progress=False)
    trials = run_search(STRATEGIES.get("random")(SPACE, seed=0), ev, 2, progress=False)
    for t in trials:
        assert t.ok and t.metrics["score"] == t.metrics["accuracy"] and 0 <= t.metrics["accuracy"] <= 1
        assert t.metrics["params_m"] > 0 and t.metrics["train_seconds"] > 0
    bad = make_evaluator("train", SPACE, seed=0, dataset="synthetic:20", lr=1e30, resolution=32, progress=False)
    failed = run_search(STRATEGIES.get("random")(SPACE, seed=0), bad, 1, progress=False)
    assert not failed[0].ok and "diverged" in (failed[0].error or "")


def test_train_evaluator_uses_dataset_classes_and_resolution(tmp_path: Path) -> None:
    from PIL import Image
    rng = np.random.default_rng(0)
    for c in ("a", "b", "c"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    space = get_space("mbconv", resolution=64, width_mult=0.25, num_classes=1000)
    ev = make_evaluator("train", space, dataset=f"imagefolder:{tmp_path}", epochs=1, progress=False)
    assert ev.num_classes == 3 and ev.train_space.input_shape == (3, 40, 40)
    arch = space.sample(np.random.default_rng(0))
    out = ev(arch)
    assert 0 <= out["accuracy"] <= 1
    with torch.no_grad():
        assert ev.train_space.build(arch, num_classes=3)(ev.val[0][:2]).shape == (2, 3)
    with pytest.raises(UsageError, match="no option 'epoch'.*epochs"):
        make_evaluator("train", space, epoch=1)
