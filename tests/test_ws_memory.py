"""Training memory of weight-sharing searches: the estimate before training (nas/supernet/memory.py), the
proxy that `train_size=auto` falls back to when the searched size would not fit `memory_gb`, and the
peak resident memory every search reports."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.core.errors import UsageError
from nas.core.memory import peak_rss_mb
from nas.strategies.base import TrainContext
from nas.strategies.catalog import STRATEGIES
from nas.supernet import build_supernet, training_space
from nas.supernet.memory import BASE_BYTES, _saved_bytes, training_bytes
from search_spaces.catalog import get_space

NASNET = get_space("nasnet")


def test_meta_device_count_equals_the_bytes_a_real_forward_saves() -> None:
    small = training_space(NASNET, num_classes=10, channels=8, cells=1)
    torch.manual_seed(0)
    net = build_supernet(small)
    real = _saved_bytes(net, net.largest(), torch.randn(2, 3, 32, 32))   # real tensors, counted by storage
    est = training_bytes(small, 2, samples=0)
    assert est["activations_per_sample"] * 2 == pytest.approx(real, rel=0.02)
    assert est["params"] == sum(p.numel() * 4 for p in net.parameters())


def test_auto_trains_the_nasnet_proxy_when_the_searched_size_needs_more_than_memory_gb() -> None:
    # measured (ws.md): the searched nasnet supernet (36 channels, 6 cells, 729 MB of weights) held 6.8 GB
    # one minute into a search before the estimate existed; the 8-channel, 1-cell proxy peaks far lower
    ctx = TrainContext(space=NASNET, dataset="synthetic", batch_size=64)
    strat = STRATEGIES.get("supernet")(NASNET)
    small = strat.train_space(ctx, "channels", "cells")
    full = training_bytes(training_space(NASNET, num_classes=10), 64)   # kept from train_space's estimate
    proxy = training_bytes(training_space(NASNET, num_classes=10, channels=8, cells=1), 64)
    assert full["bytes"] > 4 * 2**30 and full["params"] > 600 * 2**20
    assert BASE_BYTES < proxy["bytes"] < 2**30
    assert small.options()["channels"] == 8 and small.options()["cells"] == 1
    why = strat.size_info
    assert why["used"] == "proxy" and why["asked"] == "auto" and "memory_gb=2" in why["why"]
    assert why["searched_memory_estimate_gb"] == pytest.approx(full["bytes"] / 2**30, abs=0.01)
    roomy = STRATEGIES.get("supernet")(NASNET, memory_gb=64.0)
    assert roomy.train_space(ctx, "channels", "cells").options()["channels"] == 36   # fits: the searched size
    with pytest.raises(UsageError, match="memory_gb must be a positive number"):
        STRATEGIES.get("supernet")(NASNET, memory_gb=0)


def test_peak_rss_is_this_process_peak() -> None:
    before = peak_rss_mb()
    block = np.ones(64 * 2**20 // 8)   # 64 MB touched
    after = peak_rss_mb()
    assert before is not None and after is not None and after >= before and after > 64
    del block
