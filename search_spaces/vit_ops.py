"""Vision-transformer ops (registered in `search_spaces.ops.OPS` with names prefixed ``vit_``).

Token tensors are (B, N, D) with the class token first (N = 1 + grid * grid). Each op is a whole
layer that a latency table can key and time on its own:

- ``vit_patch_embed``: DeiT/ViT linear patch embedding (conv k=p, s=p) + class token + position embedding.
- ``vit_conv_embed``: the ViT-ResNAS convolutional patch embedding (Liao et al. 2021, code
  ``PatchConvEmbed``): conv3x3/2-BN-ReLU, two conv3x3-BN-ReLU with a skip around them, then a
  conv k=s=p/2 projection; + class token + position embedding.
- ``vit_block``: pre-norm transformer block, x + MHSA(LN(x)), x + MLP(LN(x)). The attention width is
  heads * head_dim and need not equal the embedding width (as in the ViT-ResNAS super-net).
- ``vit_reduce``: residual spatial reduction (Liao et al. 2021, Sec. 3.1): LN -> patch tokens back to
  a 2-D grid -> conv3x3/2 to the wider width (+ a new position embedding), class token -> linear;
  the shortcut average-pools the grid 2x2 and zero-pads the channels.
- ``vit_head``: LN of the class token -> linear classifier.

Attention is plain matmul + softmax so the TorchScript ONNX exporter handles it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from nas.core.layer import LayerSpec
from search_spaces.ops import OPS, OpDef

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

#: mid channels of the convolutional patch embedding (ViT-ResNAS code default)
CONV_EMBED_MID = 24
LN_EPS = 1e-6


def _trunc_normal(shape: tuple[int, ...]) -> "nn.Parameter":
    import torch
    import torch.nn as nn
    p = nn.Parameter(torch.zeros(shape))
    nn.init.trunc_normal_(p, std=0.02)
    return p


def _add_tokens(module: "nn.Module", feat: "torch.Tensor") -> "torch.Tensor":
    """(B, D, g, g) features -> (B, 1 + g*g, D) tokens: prepend the class token, add positions."""
    import torch
    x = feat.flatten(2).transpose(1, 2)
    cls = module.cls_token.expand(x.shape[0], -1, -1)
    return torch.cat((cls, x), dim=1) + module.pos_embed


# ---- vit_patch_embed (DeiT) -------------------------------------------------------------------
def _build_patch_embed(dim: int, patch: int, grid: int) -> "nn.Module":
    import torch.nn as nn

    class PatchEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, dim, patch, patch)
            self.cls_token = _trunc_normal((1, 1, dim))
            self.pos_embed = _trunc_normal((1, 1 + grid * grid, dim))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return _add_tokens(self, self.proj(x))

    return PatchEmbed()


def _patch_embed_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    return p["grid"] ** 2 * p["dim"] * 3 * p["patch"] ** 2


OPS.register("vit_patch_embed", OpDef(_build_patch_embed, _patch_embed_macs))


# ---- vit_conv_embed (ViT-ResNAS) ----------------------------------------------------------------
def _build_conv_embed(dim: int, patch: int, grid: int, mid: int = CONV_EMBED_MID) -> "nn.Module":
    import torch.nn as nn

    def cba(cin: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU())

    class ConvEmbed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.conv3 = cba(3, 2), cba(mid, 1), cba(mid, 1)
            self.proj = nn.Conv2d(mid, dim, patch // 2, patch // 2)
            self.cls_token = _trunc_normal((1, 1, dim))
            self.pos_embed = _trunc_normal((1, 1 + grid * grid, dim))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            x = self.conv1(x)
            x = x + self.conv3(self.conv2(x))
            return _add_tokens(self, self.proj(x))

    return ConvEmbed()


def _conv_embed_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    _, h, w = spec.input_shape
    mid, half = p.get("mid", CONV_EMBED_MID), (h // 2) * (w // 2)
    stem = half * mid * 3 * 9 + 2 * half * mid * mid * 9
    return stem + p["grid"] ** 2 * p["dim"] * mid * (p["patch"] // 2) ** 2


OPS.register("vit_conv_embed", OpDef(_build_conv_embed, _conv_embed_macs))


# ---- vit_block -----------------------------------------------------------------------------------
def _build_block(dim: int, heads: int, head_dim: int, mlp: int) -> "nn.Module":
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            inner = heads * head_dim
            self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
            self.qkv = nn.Linear(dim, 3 * inner)
            self.proj = nn.Linear(inner, dim)
            self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))
            self.scale = head_dim ** -0.5

        def attention(self, x: "torch.Tensor") -> "torch.Tensor":
            b, n, _ = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]                      # (B, heads, N, head_dim)
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, heads * head_dim))

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            x = x + self.attention(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    return Block()


def _block_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    n, dim = spec.input_shape
    inner = p["heads"] * p["head_dim"]
    return n * dim * 3 * inner + 2 * n * n * inner + n * inner * dim + 2 * n * dim * p["mlp"]


OPS.register("vit_block", OpDef(_build_block, _block_macs))


# ---- vit_reduce (residual spatial reduction) ----------------------------------------------------
def _build_reduce(cin: int, cout: int, grid: int) -> "nn.Module":
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if cout < cin:
        raise ValueError(f"vit_reduce cout {cout} < cin {cin}: the shortcut zero-pads channels, so width "
                         f"may only grow")
    out_grid = grid // 2

    class Reduce(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(cin, eps=LN_EPS)
            self.conv = nn.Conv2d(cin, cout, 3, 2, 1)
            self.cls_proj = nn.Linear(cin, cout)
            self.pos_embed = _trunc_normal((1, out_grid * out_grid, cout))
            self.pool = nn.AvgPool2d(2, 2)

        def grid2d(self, tokens: "torch.Tensor") -> "torch.Tensor":
            return tokens.transpose(1, 2).reshape(tokens.shape[0], cin, grid, grid)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            y = self.norm(x)
            patches = self.conv(self.grid2d(y[:, 1:])).flatten(2).transpose(1, 2) + self.pos_embed
            main = torch.cat((self.cls_proj(y[:, :1]), patches), dim=1)
            short = torch.cat((x[:, :1], self.pool(self.grid2d(x[:, 1:])).flatten(2).transpose(1, 2)), dim=1)
            return main + F.pad(short, (0, cout - cin))

    return Reduce()


def _reduce_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    return (p["grid"] // 2) ** 2 * p["cout"] * p["cin"] * 9 + p["cin"] * p["cout"]


OPS.register("vit_reduce", OpDef(_build_reduce, _reduce_macs))


# ---- vit_head --------------------------------------------------------------------------------------
def _build_head(dim: int, classes: int) -> "nn.Module":
    import torch.nn as nn

    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(dim, eps=LN_EPS)
            self.fc = nn.Linear(dim, classes)

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":
            return self.fc(self.norm(x[:, 0]))

    return Head()


def _head_macs(spec: LayerSpec) -> int:
    p = spec.kwargs
    return p["dim"] * p["classes"]


OPS.register("vit_head", OpDef(_build_head, _head_macs))


# ---- spec constructors -------------------------------------------------------------------------------
def embed_spec(stem: str, dim: int, patch: int, resolution: int) -> LayerSpec:
    grid = resolution // patch
    op = {"conv": "vit_conv_embed", "linear": "vit_patch_embed"}[stem]
    return LayerSpec.make(op, {"dim": dim, "patch": patch, "grid": grid}, (3, resolution, resolution),
                          (1 + grid * grid, dim))


def block_spec(tokens: int, dim: int, heads: int, head_dim: int, mlp: int) -> LayerSpec:
    return LayerSpec.make("vit_block", {"dim": dim, "heads": heads, "head_dim": head_dim, "mlp": mlp},
                          (tokens, dim), (tokens, dim))


def reduce_spec(grid: int, cin: int, cout: int) -> LayerSpec:
    out = grid // 2
    return LayerSpec.make("vit_reduce", {"cin": cin, "cout": cout, "grid": grid},
                          (1 + grid * grid, cin), (1 + out * out, cout))


def head_spec(tokens: int, dim: int, classes: int) -> LayerSpec:
    return LayerSpec.make("vit_head", {"dim": dim, "classes": classes}, (tokens, dim), (classes,))
