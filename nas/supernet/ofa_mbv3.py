"""Weight-sharing supernet of the `ofa_mbv3` space: Once-for-All's elastic MobileNetV3 (Cai et al. 2020).

Every block slot holds one MobileNetV3 bneck at the largest choice (kernel 7, expansion 6); the
three elastic dimensions are views of its weights, as in OFA:

* **elastic kernel**: a k x k depthwise kernel is the centre of the 7 x 7 one (OFA additionally
  learns kernel-transformation matrices; here the centre crop is used as is, as in Single-Path NAS
  and our `mbconv` supernet);
* **elastic expansion**: an expansion e uses the first ``make_divisible(cin * e, 8)`` channels of the
  expand, depthwise and project weights and of their BatchNorms, and the squeeze-excite layers the
  first ``make_divisible(mid // 4, 8)`` reduced channels (OFA's channel slicing);
* **elastic depth**: a stage of depth d runs its first d blocks and skips the rest. The space lets a
  skip sit between blocks of a stage's last two slots (the same net), so a path is run in its
  canonical form (skips last), whatever order the arch was written in.

Stem, first block and head are ordinary modules built from the space's layer specs. A path forward
runs exactly the ops of `search_spaces.mbv3_ops.ir_block` on the sliced tensors (functional calls of
the same kernels), so ``space.build(arch)`` loaded with ``extract(arch)`` computes bit-identical
outputs. The shared BatchNorm statistics are recalibrated per path by the trainer, as for `mbconv`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.core.arch import Arch
from nas.core.errors import ArchError, UsageError
from nas.supernet.mbconv import _copy_bn, sliced_bn
from search_spaces.ofa_mbv3 import EXPANSIONS, KERNELS, MAX_DEPTH, SKIP, STAGES, OFAMobileNetV3Space, _parse_token
from search_spaces.ops import build_layer, make_divisible

_ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"relu": F.relu, "hswish": F.hardswish}


def _mid(cin: int, e: int) -> int:
    return make_divisible(round(cin * e), 8)


class ElasticIRBlock(nn.Module):
    """One block slot: the weights of every (kernel, expansion) choice of an OFA bneck at once."""

    def __init__(self, cin: int, cout: int, stride: int, act: str, se: bool) -> None:
        super().__init__()
        self.cin, self.cout, self.stride, self.act_name, self.has_se = cin, cout, stride, act, se
        self.kmax, mid = max(KERNELS), _mid(cin, max(EXPANSIONS))
        self.expand = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dw = nn.Conv2d(mid, mid, self.kmax, stride, self.kmax // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        if se:
            red = make_divisible(mid // 4, 8)
            self.se_reduce = nn.Conv2d(mid, red, 1)
            self.se_expand = nn.Conv2d(red, mid, 1)
        self.project = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.residual = stride == 1 and cin == cout

    def dw_kernel(self, k: int, mid: int) -> torch.Tensor:
        """The centre k x k of the first `mid` depthwise kernels."""
        off = (self.kmax - k) // 2
        return self.dw.weight[:mid, :, off:off + k, off:off + k]

    def forward_choice(self, x: torch.Tensor, k: int, e: int) -> torch.Tensor:
        act, mid = _ACTS[self.act_name], _mid(self.cin, e)
        y = x
        if mid != self.cin:
            y = act(sliced_bn(F.conv2d(x, self.expand.weight[:mid]), self.bn1, mid, self.training))
        y = F.conv2d(y, self.dw_kernel(k, mid), None, self.stride, k // 2, 1, mid)
        y = act(sliced_bn(y, self.bn2, mid, self.training))
        if self.has_se:
            red = make_divisible(mid // 4, 8)
            s = F.adaptive_avg_pool2d(y, 1)
            s = F.relu(F.conv2d(s, self.se_reduce.weight[:red, :mid], self.se_reduce.bias[:red]))
            s = F.hardsigmoid(F.conv2d(s, self.se_expand.weight[:mid, :red], self.se_expand.bias[:mid]))
            y = y * s
        y = sliced_bn(F.conv2d(y, self.project.weight[:, :mid]), self.bn3, self.cout, self.training)
        return x + y if self.residual else y

    @torch.no_grad()
    def export_into(self, block: nn.Module, k: int, e: int) -> None:
        """Copy choice (k, e) into a standalone `ir_block` module (`search_spaces.ops.inverted_residual`)."""
        mid = _mid(self.cin, e)
        pre = list(block.pre)
        if mid != self.cin:
            pre[0].weight.copy_(self.expand.weight[:mid])
            _copy_bn(pre[1], self.bn1, mid)
            pre = pre[3:]
        pre[0].weight.copy_(self.dw_kernel(k, mid))
        _copy_bn(pre[1], self.bn2, mid)
        if self.has_se:
            red = make_divisible(mid // 4, 8)
            block.se[1].weight.copy_(self.se_reduce.weight[:red, :mid])
            block.se[1].bias.copy_(self.se_reduce.bias[:red])
            block.se[3].weight.copy_(self.se_expand.weight[:mid, :red])
            block.se[3].bias.copy_(self.se_expand.bias[:mid])
        block.project[0].weight.copy_(self.project.weight[:, :mid])
        _copy_bn(block.project[1], self.bn3, self.cout)


class OFASupernet(nn.Module):
    """The ofa_mbv3 space as one supernet; `set_arch` picks the path `forward` runs."""

    def __init__(self, space: OFAMobileNetV3Space) -> None:
        super().__init__()
        if not isinstance(space, OFAMobileNetV3Space):
            raise UsageError(f"OFASupernet needs an ofa_mbv3 space, got {space.name!r}")
        self.space = space
        pre, head = space._fixed()   # [stem, first block], head: shared by every path
        self.stem = build_layer(pre[0])
        self.first = build_layer(pre[1])
        self.head = build_layer(head)
        self.blocks = nn.ModuleList(
            ElasticIRBlock(cin, STAGES[st][0], s, STAGES[st][2], STAGES[st][3])
            for st, _, cin, s, _ in space._positions)
        self._path: list[tuple[int, int] | None] = []
        self.set_arch(self.largest())

    # ---- paths -------------------------------------------------------------------------------
    def largest(self) -> Arch:
        return self.space.make([f"k{max(KERNELS)}e{max(EXPANSIONS)}"] * len(self.space.decisions))

    def smallest(self) -> Arch:
        low = f"k{min(KERNELS)}e{min(EXPANSIONS)}"
        return self.space.make([SKIP if SKIP in d.choices else low for d in self.space.decisions])

    def set_arch(self, arch: Arch) -> None:
        """Run `arch` next, in its canonical form (each stage's first blocks; skips last)."""
        genes = self.space.canonical(arch).genes
        self._path = [None if g == SKIP else _parse_token(g) for g in genes]

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
        """A state dict for ``space.build(arch)`` holding this supernet's weights of `arch` (the i-th
        block of a stage inherits slot i, whatever order the arch writes its skips in)."""
        canon = self.space.canonical(arch)
        model = self.space.build(arch)
        mods = list(model.children())
        active = [(slot, _parse_token(g)) for slot, g in enumerate(canon.genes) if g != SKIP]
        if len(mods) != 3 + len(active):
            raise ArchError(f"ofa_mbv3 build of {self.space.format(arch)!r} has {len(mods)} layers; the supernet "
                            f"expects stem, first block, one per non-skip block and the head")
        mods[0].load_state_dict(self.stem.state_dict())
        mods[1].load_state_dict(self.first.state_dict())
        mods[-1].load_state_dict(self.head.state_dict())
        for i, (slot, (k, e)) in enumerate(active):
            self.blocks[slot].export_into(mods[2 + i], k, e)
        return {key: v.detach().clone() for key, v in model.state_dict().items()}


__all__ = ["ElasticIRBlock", "OFASupernet", "MAX_DEPTH"]
