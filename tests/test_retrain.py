"""`train_arch`: the schedule, sharding and augmentation against exact values; a short real training
run that learns, writes loadable files equal to torch, and resumes after a crash to the same weights."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.training import retrain
from nas.training.augment import augment, resolve
from nas.training.distributed import shard_indices
from nas.core.errors import UsageError
from nas.training.retrain import TrainConfig, lr_at, train_arch
from search_spaces.catalog import get_space

SPACE = get_space("mbconv")                       # as searched: 224 px, 1000 classes, width 1.0
SMALL = {"resolution": 32, "width_mult": 0.25}    # as trained here
ARCH = SPACE.parse("k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | k3e3 skip skip skip | "
                   "k3e3 skip skip skip | k3e3")
CFG = TrainConfig(dataset="synthetic:300", epochs=4, batch_size=20, lr=0.05, warmup_epochs=0.5, seed=3)


def test_lr_schedule_reference_values() -> None:
    # warm-up: linear to the peak over 10 steps; cosine: half the peak halfway through the rest; 0 at the end
    assert lr_at(0, 110, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 110, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(10, 110, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(60, 110, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(35, 110, 10, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, 110, 10, 1.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n,world", [(1437, 2), (1000, 4), (10, 3), (7, 1)])
def test_shards_are_disjoint_equal_and_cover_all_but_the_tail(n: int, world: int) -> None:
    for epoch in range(3):
        shards = [shard_indices(n, epoch, 0, r, world) for r in range(world)]
        assert len({len(s) for s in shards}) == 1                      # same steps on every rank
        seen = np.concatenate(shards)
        assert len(np.unique(seen)) == len(seen) == n - n % world      # nothing twice, only the tail left out
    assert not np.array_equal(shard_indices(n, 0, 0), shard_indices(n, 1, 0))   # reshuffled per epoch
    # the global batches of N ranks are exactly the batches of one process (rank r takes every N-th sample)
    k = max(1, (n // world) // 2)
    np.testing.assert_array_equal(np.sort(shard_indices(n, 0, 0)[:world * k]),
                                  np.sort(np.concatenate([shard_indices(n, 0, 0, r, world)[:k] for r in range(world)])))
    with pytest.raises(UsageError, match="cannot be shared by 4 processes"):
        shard_indices(3, 0, 0, 0, 4)


def test_augmentation_crops_and_flips_exactly() -> None:
    assert resolve("auto", "cifar10:/x") == "crop-flip" and resolve("auto", "digits") == "crop"
    assert resolve("auto", "synthetic") == "none"
    with pytest.raises(UsageError, match="valid: auto, none, crop, crop-flip"):
        resolve("mixup", "digits")
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16) + 1.0
    gen = torch.Generator().manual_seed(0)
    y = augment(x, "crop", gen)
    assert y.shape == x.shape
    pad = 2
    for i in range(2):   # each output is a 16x16 window of the zero-padded input
        padded = torch.nn.functional.pad(x[i], (pad,) * 4)
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(padded[:, dy:dy + 16, dx:dx + 16], y[i])]
        assert len(hits) == 1
    flipped = augment(torch.ones(400, 1, 8, 8).cumsum(-1), "crop-flip", torch.Generator().manual_seed(1))
    left_high = (flipped[:, 0, 4, 2] > flipped[:, 0, 4, 5]).float().mean()
    assert 0.4 < float(left_high) < 0.6                                   # about half are mirrored
    assert augment(x, "none", gen) is x


def test_config_checks() -> None:
    with pytest.raises(UsageError, match="batch size 33 does not divide over 2 processes"):
        TrainConfig(batch_size=33).check(world_size=2)
    with pytest.raises(UsageError, match="epochs must be a whole number >= 1"):
        TrainConfig(epochs=0).check()
    with pytest.raises(UsageError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.5).check()


def test_train_learns_writes_files_equal_to_torch(tmp_path: Path) -> None:
    import onnxruntime as ort

    from nas.deploy.export import load_model
    old = os.umask(0o022)
    state = torch.random.get_rng_state()
    try:
        res = train_arch(SPACE, ARCH, CFG, out=tmp_path, overrides=SMALL, progress=False)
    finally:
        os.umask(old)
    assert torch.equal(torch.random.get_rng_state(), state)   # the caller's RNG is left alone
    assert res.accuracy > 0.8                        # 10 classes: chance is 0.1
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    assert all(h["seen"] == h["distinct"] == 300 for h in res.history)
    assert res.differs == {"num_classes": [1000, 10], "resolution": [224, 32], "width_mult": [1.0, 0.25]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "model.onnx", "model.pt", "result.json"]
    for p in tmp_path.iterdir():
        assert p.stat().st_mode & 0o777 == 0o644, p
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["differs_from_searched"]["resolution"] == [224, 32] and data["accuracy"] == res.accuracy
    model = load_model(tmp_path / "model.pt")
    assert isinstance(model, torch.nn.Module) and not model.training
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for b in (1, 8):
        x = torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        assert got.shape == (b, 10)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    # the exported weights are the trained ones: same held-out accuracy as reported
    from nas.training.data import load_dataset
    xv, yv = load_dataset("synthetic:300", split="val", seed=3, resolution=32)
    with torch.no_grad():
        acc = float((model(xv).argmax(1) == yv).float().mean())
    assert acc == pytest.approx(res.accuracy, abs=1e-6)


def test_crash_then_resume_gives_the_uninterrupted_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = train_arch(SPACE, ARCH, CFG, out=tmp_path / "full", overrides=SMALL, progress=False)
    calls = {"n": 0}
    real = retrain._evaluate

    def crash_in_epoch_2(*a: object, **k: object) -> tuple[float, float]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(retrain, "_evaluate", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_arch(SPACE, ARCH, CFG, out=tmp_path / "cut", overrides=SMALL, progress=False)
    monkeypatch.setattr(retrain, "_evaluate", real)
    # only the finished epoch's complete checkpoint is there: no temp files, no exports yet
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint.pt"]
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(UsageError, match="pass --resume"):
        train_arch(SPACE, ARCH, CFG, out=tmp_path / "cut", overrides=SMALL, progress=False)
    with pytest.raises(UsageError, match="cannot resume .* its recipe"):
        train_arch(SPACE, ARCH, dataclasses.replace(CFG, lr=0.2), out=tmp_path / "cut", overrides=SMALL,
                   resume=True, progress=False)
    back = train_arch(SPACE, ARCH, CFG, out=tmp_path / "cut", overrides=SMALL, resume=True, progress=False)
    assert back.accuracy == full.accuracy and back.history[-1]["train_loss"] == full.history[-1]["train_loss"]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mixed_precision_on_cpu_learns() -> None:
    # bfloat16 autocast on CPU (float16 + a gradient scaler on CUDA): still learns, files stay float32
    res = train_arch(SPACE, ARCH, dataclasses.replace(CFG, amp=True), overrides=SMALL, progress=False)
    assert res.accuracy > 0.8 and res.config.amp
