"""Weight-sharing supernet of the ViT-ResNAS space (Liao et al. 2021, Sec. 3.2).

Every layer is held once at its largest configuration - the embedding, each block slot and each
reduction at the stage's largest width, heads and MLP size - as the very modules
``search_spaces.vit_ops`` builds, and a sub-net uses leading slices of them: the first `width`
embedding channels (LayerNorms normalise over those only), the first `heads` attention heads of
each of q, k and v, the first `mlp` hidden units, and the first `depth` block slots of a stage.

`extract` slices every tensor of those modules to the shape of the same tensor in
``space.build(arch)`` (the qkv projection per q/k/v part), so the standalone net computes what the
supernet path computes.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.core.arch import Arch
from nas.core.errors import UsageError
from search_spaces.ops import build_layer
from search_spaces.vit_ops import LN_EPS, block_spec, embed_spec, head_spec, reduce_spec
from search_spaces.vit_resnas import Stage, VitResNASSpace


def _ln(x: torch.Tensor, norm: nn.LayerNorm, w: int) -> torch.Tensor:
    return F.layer_norm(x, (w,), norm.weight[:w], norm.bias[:w], LN_EPS)


def _qkv(weight: torch.Tensor, inner_max: int, inner: int, w: int | None = None) -> torch.Tensor:
    """The q, k and v rows of the first `inner` attention channels (and first `w` inputs)."""
    parts = weight.view(3, inner_max, *weight.shape[1:])[:, :inner]
    if w is not None:
        parts = parts[..., :w]
    return parts.reshape(3 * inner, *parts.shape[2:])


class ViTResNASSupernet(nn.Module):
    """The ViT-ResNAS space as one supernet; `set_arch` picks the sub-net `forward` runs."""

    def __init__(self, space: VitResNASSpace) -> None:
        super().__init__()
        if not isinstance(space, VitResNASSpace):
            raise UsageError(f"ViTResNASSupernet needs a vit_resnas space, got {space.name!r}")
        self.space = space
        n = space.num_stages
        wmax = [max(w) for w in space.widths]
        self.embed = build_layer(embed_spec(space.stem, wmax[0], space.patch, space.resolution))
        self.blocks = nn.ModuleList(
            nn.ModuleList(build_layer(block_spec(space.tokens(i), wmax[i], max(space.heads[i]), space.head_dims[i],
                                                 max(space.mlp[i]))) for _ in range(max(space.depths[i])))
            for i in range(n))
        self.reduces = nn.ModuleList(build_layer(reduce_spec(space.grid(i - 1), wmax[i - 1], wmax[i]))
                                     for i in range(1, n))
        self.head = build_layer(head_spec(space.tokens(n - 1), wmax[-1], space.num_classes))
        self._stages: list[Stage] = space.stages(self.largest())

    # ---- paths -------------------------------------------------------------------------------
    def largest(self) -> Arch:
        sp = self.space
        return sp.from_stages([Stage(max(d), max(w), ((max(h), max(m)),) * max(d))
                               for d, w, h, m in zip(sp.depths, sp.widths, sp.heads, sp.mlp)])

    def smallest(self) -> Arch:
        sp = self.space
        return sp.from_stages([Stage(min(d), min(w), ((min(h), min(m)),) * min(d))
                               for d, w, h, m in zip(sp.depths, sp.widths, sp.heads, sp.mlp)])

    def set_arch(self, arch: Arch) -> None:
        self._stages = self.space.stages(self.space.validate(arch))

    @property
    def arch(self) -> Arch:
        return self.space.from_stages(self._stages)

    # ---- sliced layers -----------------------------------------------------------------------
    def _embed(self, x: torch.Tensor, w: int) -> torch.Tensor:
        m = self.embed
        if self.space.stem == "conv":
            x = m.conv1(x)
            x = x + m.conv3(m.conv2(x))
        feat = F.conv2d(x, m.proj.weight[:w], m.proj.bias[:w], m.proj.stride)
        tokens = feat.flatten(2).transpose(1, 2)
        cls = m.cls_token[..., :w].expand(tokens.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1) + m.pos_embed[..., :w]

    def _block(self, m: nn.Module, x: torch.Tensor, w: int, heads: int, mlp: int, stage: int) -> torch.Tensor:
        hd = self.space.head_dims[stage]
        inner, inner_max = heads * hd, m.proj.in_features
        b, n, _ = x.shape
        y = _ln(x, m.norm1, w)
        qkv = F.linear(y, _qkv(m.qkv.weight, inner_max, inner, w), _qkv(m.qkv.bias, inner_max, inner))
        q, k, v = qkv.reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        attn = ((q * m.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, inner)
        x = x + F.linear(out, m.proj.weight[:w, :inner], m.proj.bias[:w])
        fc1, fc2 = m.mlp[0], m.mlp[2]
        hidden = F.gelu(F.linear(_ln(x, m.norm2, w), fc1.weight[:mlp, :w], fc1.bias[:mlp]))
        return x + F.linear(hidden, fc2.weight[:w, :mlp], fc2.bias[:w])

    def _reduce(self, m: nn.Module, x: torch.Tensor, cin: int, cout: int, grid: int) -> torch.Tensor:
        b = x.shape[0]
        y = _ln(x, m.norm, cin)
        grid2d = lambda t: t.transpose(1, 2).reshape(b, cin, grid, grid)  # noqa: E731
        conv = F.conv2d(grid2d(y[:, 1:]), m.conv.weight[:cout, :cin], m.conv.bias[:cout], 2, 1)
        patches = conv.flatten(2).transpose(1, 2) + m.pos_embed[..., :cout]
        main = torch.cat((F.linear(y[:, :1], m.cls_proj.weight[:cout, :cin], m.cls_proj.bias[:cout]), patches), 1)
        short = torch.cat((x[:, :1], F.avg_pool2d(grid2d(x[:, 1:]), 2, 2).flatten(2).transpose(1, 2)), dim=1)
        return main + F.pad(short, (0, cout - cin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = self._stages
        x = self._embed(x, st[0].width)
        for i, stage in enumerate(st):
            if i:
                x = self._reduce(self.reduces[i - 1], x, st[i - 1].width, stage.width, self.space.grid(i - 1))
            for m, (heads, mlp) in zip(self.blocks[i], stage.blocks):
                x = self._block(m, x, stage.width, heads, mlp, i)
        w = st[-1].width
        return F.linear(_ln(x[:, 0], self.head.norm, w), self.head.fc.weight[:, :w], self.head.fc.bias)

    # ---- inherited weights -------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> dict[str, Any]:
        """A state dict for ``space.build(arch)``: every tensor a leading slice of the supernet's."""
        stages = self.space.stages(self.space.validate(arch))
        model = self.space.build(arch)
        sources: list[nn.Module] = [self.embed]
        for i, stage in enumerate(stages):
            if i:
                sources.append(self.reduces[i - 1])
            sources += list(self.blocks[i][:stage.depth])
        sources.append(self.head)
        targets = list(model.children())
        if len(targets) != len(sources):
            raise UsageError(f"vit_resnas build has {len(targets)} layers, the supernet path {len(sources)}")
        state: dict[str, Any] = {}
        for idx, (src, dst) in enumerate(zip(sources, targets)):
            big = src.state_dict()
            for key, t in dst.state_dict().items():
                s = big[key]
                if key in ("qkv.weight", "qkv.bias"):
                    part = _qkv(s, src.proj.in_features, t.shape[0] // 3, t.shape[1] if t.ndim > 1 else None)
                else:
                    part = s[tuple(slice(0, n) for n in t.shape)]
                state[f"{idx}.{key}"] = part.detach().clone()
        return state
