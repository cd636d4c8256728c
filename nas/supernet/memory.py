"""How much memory training a supernet takes, estimated before training.

`training_bytes(space, batch_size)` builds the space's supernet on the meta device, runs one
training-mode forward of its largest path (and a few sampled ones) on a batch of 2 and counts the
bytes autograd saves for the backward pass (`torch.autograd.graph.saved_tensors_hooks`; a tensor
saved by several ops counted once). Those activations grow with the batch; parameters count four
times (weights, gradients, momentum, a copy while a path is extracted). The estimate adds the
interpreter with torch loaded (`BASE_BYTES`). It is what `train_size=auto` compares with the strategy's `memory_gb` before
training at the searched size (nas/strategies/weight_sharing.py).

The process's measured peak is `nas.core.memory.peak_rss_mb` (every search reports it).
"""
from __future__ import annotations

from typing import Any

from nas.core.arch import Arch
from nas.core.space import SearchSpace

#: the process besides the net: torch, numpy and the package loaded (measured: 221 MB) plus the data,
#: the evaluation batches and allocator slack
BASE_BYTES = 400 * 2**20


def _saved_bytes(net: Any, arch: Arch | None, x: Any) -> int:
    """Bytes autograd saves for the backward of one training forward of `net` (on the meta device:
    shapes only, nothing allocated); a tensor saved by several ops is counted once."""
    import torch
    kept: dict[int, Any] = {}   # id -> tensor (held, so that ids are not reused)

    def pack(t: "torch.Tensor") -> "torch.Tensor":
        kept.setdefault(id(t), t)
        return t

    if arch is not None:
        net.set_arch(arch)
    net.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    return int(sum(t.numel() * t.element_size() for t in kept.values()))


_CACHE: dict[str, dict[str, int]] = {}


def training_bytes(space: SearchSpace, batch_size: int, samples: int = 0, seed: int = 0) -> dict[str, Any]:
    """Estimated peak bytes of training `space`'s supernet with batches of `batch_size`:
    {"bytes", "params", "activations_per_sample"} (see the module docstring); `samples` sampled
    paths besides the largest. Built and run on the meta device: next to no memory whatever the
    size, but seconds of CPU for a large cell supernet (8 s for the searched nasnet), so the
    per-sample figures are kept per space, options and paths for the process."""
    import json

    key = json.dumps([space.name, space.options(), samples, seed], sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE[key] = _measure(space, samples, seed)
    got = _CACHE[key]
    return {**got, "bytes": int(BASE_BYTES + 4 * got["params"] + got["activations_per_sample"] * batch_size)}


def _measure(space: SearchSpace, samples: int, seed: int) -> dict[str, int]:
    import numpy as np
    import torch

    from nas.supernet import build_supernet
    with torch.device("meta"):
        net = build_supernet(space)
        x = torch.zeros(2, *space.input_shape[-3:])
        rng = np.random.default_rng(seed)
        archs = [net.largest()] + [space.sample(rng) for _ in range(samples)]
        per_sample = max(_saved_bytes(net, a, x) for a in archs) / 2
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    return {"params": int(params), "activations_per_sample": int(per_sample)}
