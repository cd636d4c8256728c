"""Training-free (zero-cost) evaluation: score an untrained net from one seeded mini-batch.

Proxies are registered in `PROXIES` (name -> function(model, inputs, targets) -> float). The
`zero-cost` evaluator builds the arch at a reduced proxy resolution (cheap, and the ranking of
proxies is stable across resolutions for fully convolutional nets) and reports the chosen proxy as
`score` plus `params_m` and `macs_m` of the full-resolution net.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from nas.arch import Arch
from nas.registry import Registry
from nas.space import SearchSpace

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
Proxy = Callable[["torch.nn.Module", "torch.Tensor", "torch.Tensor"], float]
PROXIES: Registry[Proxy] = Registry("zero-cost proxy")

_ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "Hardswish", "SiLU", "LeakyReLU")


def naswot(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """NASWOT (Mellor et al. 2021): log-determinant of the kernel of binary activation codes.
    Nets whose units separate the inputs of a batch into more distinct patterns score higher."""
    import torch
    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)

    def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
        codes = (out.detach().reshape(n, -1) > 0).double()
        k.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ in _ACTIVATIONS]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else float("-inf")


def params_proxy(model: "torch.nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    return float(sum(p.numel() for p in model.parameters()))


PROXIES.register("naswot", naswot)
PROXIES.register("params", params_proxy)


def count_macs(space: SearchSpace, arch: Arch) -> int:
    from search_spaces.ops import layer_macs
    return int(sum(layer_macs(s) for s in space.layers(arch)))


class ZeroCostEvaluator:
    """`score` = a zero-cost proxy of the arch built at `resolution` on one seeded batch."""

    def __init__(self, space: SearchSpace, *, seed: int = 0, proxy: str = "naswot", batch: int = 16,
                 resolution: int | None = 64, num_classes: int | None = None) -> None:
        from search_spaces import get_space
        self.space, self.seed, self.batch = space, seed, batch
        self.proxy_name, self.proxy = proxy, PROXIES.get(proxy)
        opts = space.options()
        self.proxy_space = space
        if resolution is not None and "resolution" in opts and opts["resolution"] > resolution:
            self.proxy_space = get_space(space.name, **{**opts, "resolution": resolution})
        self.num_classes = num_classes or getattr(space, "num_classes", 10)

    def _batch(self) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch
        g = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.batch, *self.proxy_space.input_shape, generator=g)
        y = torch.randint(0, self.num_classes, (self.batch,), generator=g)
        return x, y

    def __call__(self, arch: Arch) -> dict[str, float]:
        import torch
        torch.manual_seed(self.seed)  # weight init is part of the proxy: seed it per arch, not globally drifting
        model = self.proxy_space.build(arch)
        model.train()
        x, y = self._batch()
        score = self.proxy(model, x, y)
        params = sum(p.numel() for p in model.parameters())
        return {"score": float(score), self.proxy_name: float(score), "params_m": params / 1e6,
                "macs_m": count_macs(self.space, arch) / 1e6}


def _factory(space: SearchSpace, seed: int = 0, **options: Any) -> ZeroCostEvaluator:
    return ZeroCostEvaluator(space, seed=seed, **options)


def _register() -> None:
    from nas.evaluators import EVALUATORS
    EVALUATORS.register("zero-cost", _factory)


_register()

