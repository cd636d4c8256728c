"""Weight-sharing supernet of the MBConv space, with Single-Path NAS's shared kernels.

Every searchable position holds one MBConv at the largest kernel and expansion (Stamoulis et al.
2019, Sec. 3.1, the "superkernel"): a smaller kernel is the centre of the largest depthwise kernel
(k3 = the inner 3x3 of the 5x5) and a smaller expansion uses the first ``cin * e`` channels of the
expansion, depthwise and projection weights (e3 = the first half of e6). BatchNorm layers are shared
the same way (the first channels), which is why the trainer recalibrates BN statistics per path
before it scores one. ``skip`` is the identity. Stem, first block and head are ordinary modules
built from the space's own layer specs, so `extract` can hand their states over unchanged.

A path forward slices the shared tensors and runs exactly the ops of `search_spaces.ops` MBConv
(conv-BN-ReLU6 expand, depthwise, BN-ReLU6, project-BN, residual), so the standalone net built by
``space.build(arch)`` with the extracted state computes the same outputs.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from search_spaces.mbconv import SKIP, MBConvSpace
from search_spaces.ops import build_layer

Choice = tuple[int, int] | None     # (kernel, expansion); None = skip


def parse_token(token: str) -> Choice:
    """``"k5e6"`` -> (5, 6); ``"skip"`` -> None."""
    if token == SKIP:
        return None
    k, _, e = token[1:].partition("e")
    return int(k), int(e)


def sliced_bn(x: torch.Tensor, bn: nn.BatchNorm2d, n: int, training: bool) -> torch.Tensor:
    """BatchNorm over the first `n` channels of `bn` (its running statistics are updated in place,
    with nn.BatchNorm2d's rule: `momentum`, or a cumulative average when momentum is None)."""
    factor = 0.0
    if training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else float(bn.momentum)
    use_batch = training or not bn.track_running_stats
    mean = bn.running_mean[:n] if bn.running_mean is not None else None
    var = bn.running_var[:n] if bn.running_var is not None else None
    return F.batch_norm(x, mean, var, bn.weight[:n], bn.bias[:n], use_batch, factor, bn.eps)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
    dst.weight.copy_(src.weight[:n])
    dst.bias.copy_(src.bias[:n])
    dst.running_mean.copy_(src.running_mean[:n])
    dst.running_var.copy_(src.running_var[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class SuperMBConv(nn.Module):
    """One searchable position: the weights of every (kernel, expansion) choice at once."""

    def __init__(self, cin: int, cout: int, stride: int, kernels: tuple[int, ...], expansions: tuple[int, ...],
                 skippable: bool, zero_init_residual: bool = True) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.kernels, self.expansions, self.skippable = kernels, expansions, skippable
        self.kmax, mid = max(kernels), cin * max(expansions)
        self.expand = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = nn.Conv2d(mid, mid, self.kmax, stride, self.kmax // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.project = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout
        if self.residual and zero_init_residual:   # start as the identity: deep nets train faster (Goyal et al. 2017)
            nn.init.zeros_(self.bn3.weight)

    def dw_kernel(self, k: int, mid: int) -> torch.Tensor:
        """The centre k x k of the first `mid` depthwise kernels."""
        off = (self.kmax - k) // 2
        return self.dw.weight[:mid, :, off:off + k, off:off + k]

    def forward_choice(self, x: torch.Tensor, k: int, e: int) -> torch.Tensor:
        mid = self.cin * e
        y = x
        if e != 1:
            y = F.relu6(sliced_bn(F.conv2d(x, self.expand.weight[:mid]), self.bn1, mid, self.training))
        y = F.conv2d(y, self.dw_kernel(k, mid), None, self.stride, k // 2, 1, mid)
        y = F.relu6(sliced_bn(y, self.bn2, mid, self.training))
        y = sliced_bn(F.conv2d(y, self.project.weight[:, :mid]), self.bn3, self.cout, self.training)
        return x + y if self.residual else y

    @torch.no_grad()
    def export_into(self, block: nn.Module, k: int, e: int) -> None:
        """Copy the weights of choice (k, e) into a standalone `search_spaces.ops` MBConv `block`."""
        mid = self.cin * e
        pre = list(block.pre)
        if e != 1:
            pre[0].weight.copy_(self.expand.weight[:mid])
            _copy_bn(pre[1], self.bn1, mid)
            pre = pre[3:]
        pre[0].weight.copy_(self.dw_kernel(k, mid))
        _copy_bn(pre[1], self.bn2, mid)
        block.project[0].weight.copy_(self.project.weight[:, :mid])
        _copy_bn(block.project[1], self.bn3, self.cout)


class MBConvSupernet(nn.Module):
    """The MBConv space as one supernet; `set_arch` picks the path `forward` runs."""

    def __init__(self, space: MBConvSpace, zero_init_residual: bool = True) -> None:
        super().__init__()
        if not isinstance(space, MBConvSpace):
            raise UsageError(f"MBConvSupernet needs an mbconv space, got {space.name!r}")
        self.space = space
        pre, head = space._fixed()   # [stem, first block], head: shared by every path
        self.stem = build_layer(pre[0])
        self.first = build_layer(pre[1])
        self.head = build_layer(head)
        self.blocks = nn.ModuleList(
            SuperMBConv(cin, cout, s, space.kernels, space.expansions, skippable, zero_init_residual)
            for _, cin, cout, s, skippable in space._positions)
        self._path: list[Choice] = [parse_token(t) for t in self.largest().genes]

    # ---- paths -------------------------------------------------------------------------------
    def largest(self) -> Arch:
        top = f"k{max(self.space.kernels)}e{max(self.space.expansions)}"
        return self.space.make([top] * len(self.space.decisions))

    def smallest(self) -> Arch:
        low = f"k{min(self.space.kernels)}e{min(self.space.expansions)}"
        return self.space.make([SKIP if SKIP in d.choices else low for d in self.space.decisions])

    def set_arch(self, arch: Arch) -> None:
        self.space.validate(arch)
        self._path = [parse_token(t) for t in arch.genes]

    @property
    def arch(self) -> Arch:
        return self.space.make([SKIP if c is None else f"k{c[0]}e{c[1]}" for c in self._path])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for block, choice in zip(self.blocks, self._path):
            if choice is not None:
                x = block.forward_choice(x, *choice)
        return self.head(x)

    # ---- inherited weights -------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> dict[str, Any]:
        """A state dict for ``space.build(arch)`` holding this supernet's weights of `arch`."""
        self.space.validate(arch)
        model = self.space.build(arch)
        mods = list(model.children())
        if len(mods) != 3 + sum(g != SKIP for g in arch.genes):
            raise ArchError(f"mbconv build of {self.space.format(arch)!r} has {len(mods)} layers; the supernet "
                            f"expects stem, first block, one per non-skip layer and the head")
        mods[0].load_state_dict(self.stem.state_dict())
        mods[1].load_state_dict(self.first.state_dict())
        mods[-1].load_state_dict(self.head.state_dict())
        i = 2
        for block, token in zip(self.blocks, arch.genes):
            choice = parse_token(token)
            if choice is not None:
                block.export_into(mods[i], *choice)
                i += 1
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
