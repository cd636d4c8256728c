"""MBConv single-path space (Single-Path NAS, Stamoulis et al. 2019; ProxylessNAS, Cai et al. 2019).

A MobileNetV2-like macro net: stem conv 3x3/2 (32) -> fixed MBConv e1 k3 (16) -> 21 searchable
layers in six stages of fixed width and stride -> 1x1 conv (1280) + pool + classifier. Each
searchable layer picks a kernel x expansion ("k3e6"), or "skip" where input and output shapes
match (every layer of a stage but the first).

Block string: the stages' tokens separated by " | ", e.g.
``k3e3 skip skip skip | k5e6 k3e3 skip skip | ...``.
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Sequence

from nas.core.arch import Arch
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import Decision
from search_spaces.chain import ChainLayers
from search_spaces.ops import MAX_CLASSES, MAX_RESOLUTION, build_layer, conv_out, conv_spec, head_spec, make_divisible, mbconv_spec

if TYPE_CHECKING:
    import torch.nn as nn

#: (output channels, searchable layers, stride of the first) - the ProxylessNAS / Single-Path NAS macro net
STAGES: tuple[tuple[int, int, int], ...] = ((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1))
SKIP = "skip"


def _token(k: int, e: int) -> str:
    return f"k{k}e{e}"


class MBConvSpace(ChainLayers):
    name = "mbconv"
    presets = {
        # Single-Path NAS (Stamoulis et al. 2019): the net found for Pixel 1 (79 ms), as released in its code.
        "single-path-nas": "k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | k5e6 k3e3 k3e3 k3e3 | "
                           "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e6 k5e6 | k3e6",
        # ProxylessNAS-mobile (Cai et al. 2019) with 7x7 kernels as 5x5 (its first stage is also 32 wide, not 24).
        "proxyless-mobile-k5": "k5e3 k3e3 skip skip | k5e3 k3e3 k5e3 k5e3 | k5e6 k5e3 k5e3 k5e3 | "
                               "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e3 k5e3 | k5e6",
        # MobileNetV2 1.0 depth pattern: 3x3 e6 everywhere, extra layers skipped.
        "mobilenetv2-like": "k3e6 k3e6 skip skip | k3e6 k3e6 k3e6 skip | k3e6 k3e6 k3e6 k3e6 | "
                            "k3e6 k3e6 k3e6 skip | k3e6 k3e6 k3e6 skip | k3e6",
    }

    def __init__(self, width_mult: float = 1.0, resolution: int = 224, num_classes: int = 1000,
                 kernels: Sequence[int] = (3, 5), expansions: Sequence[int] = (3, 6)) -> None:
        if not 0.1 <= float(width_mult) <= 4.0:
            raise ValueError(f"width_mult {width_mult} outside [0.1, 4.0]")
        if not 32 <= int(resolution) <= MAX_RESOLUTION:
            raise ValueError(f"resolution {resolution} outside [32, {MAX_RESOLUTION}]")
        if not 1 <= int(num_classes) <= MAX_CLASSES:
            raise ValueError(f"num_classes {num_classes} outside [1, {MAX_CLASSES}]")
        if not kernels or any(int(k) % 2 == 0 or int(k) < 1 for k in kernels):
            raise ValueError(f"kernels {list(kernels)} must be odd positive sizes")
        if not expansions or any(int(e) < 1 for e in expansions):
            raise ValueError(f"expansions {list(expansions)} must be positive")
        self.width_mult = float(width_mult)
        self.resolution = int(resolution)
        self.num_classes = int(num_classes)
        self.kernels = tuple(sorted(int(k) for k in kernels))
        self.expansions = tuple(sorted(int(e) for e in expansions))

    def options(self) -> dict[str, object]:
        return {"width_mult": self.width_mult, "resolution": self.resolution, "num_classes": self.num_classes,
                "kernels": list(self.kernels), "expansions": list(self.expansions)}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    # ---- structure ---------------------------------------------------------------------------
    @cached_property
    def _ops(self) -> tuple[str, ...]:
        return tuple(_token(k, e) for k in self.kernels for e in self.expansions)

    @cached_property
    def _positions(self) -> list[tuple[int, int, int, bool]]:
        """Per searchable layer: (stage, cin, cout, stride, skippable) - all fixed by the macro net."""
        out = []
        cin = make_divisible(16 * self.width_mult)
        for stage, (c, n, s) in enumerate(STAGES):
            cout = make_divisible(c * self.width_mult)
            for i in range(n):
                out.append((stage, cin if i == 0 else cout, cout, s if i == 0 else 1, i > 0))
            cin = cout
        return out

    @cached_property
    def decisions(self) -> list[Decision]:
        return [Decision(f"s{st}.l{i}", self._ops + ((SKIP,) if skippable else ()))
                for i, (st, _, _, _, skippable) in enumerate(self._positions)]

    @cached_property
    def _resolutions(self) -> list[int]:
        """Input resolution of each searchable layer (after stem and the fixed first block)."""
        r = conv_out(self.resolution, 3, 2)
        out = []
        for _, _, _, s, _ in self._positions:
            out.append(r)
            r = conv_out(r, 3, s)
        return out

    @cached_property
    def _fixed_specs(self) -> tuple[list[LayerSpec], LayerSpec]:
        return self._build_fixed()

    @cached_property
    def _layer_cache(self) -> dict[tuple[int, str], LayerSpec | None]:
        return {}

    def _fixed(self) -> tuple[list[LayerSpec], LayerSpec]:
        """(stem layers, head): built once per space (`layers()` runs several times per trial)."""
        pre, head = self._fixed_specs
        return list(pre), head

    def _build_fixed(self) -> tuple[list[LayerSpec], LayerSpec]:
        c0, c1 = make_divisible(32 * self.width_mult), make_divisible(16 * self.width_mult)
        r0 = self.resolution
        r1 = conv_out(r0, 3, 2)
        pre = [conv_spec(3, c0, 3, 2, (r0, r0)), mbconv_spec(c0, c1, 3, 1, 1, (r1, r1))]
        cl = make_divisible(STAGES[-1][0] * self.width_mult)
        r = self._resolutions[-1]
        head = head_spec(cl, make_divisible(1280 * max(1.0, self.width_mult)), self.num_classes, (r, r))
        return pre, head

    def _layer(self, pos: int, token: str) -> LayerSpec | None:
        """The spec of choice `token` at searchable position `pos`, built once per space and choice."""
        key = (pos, token)
        cache = self._layer_cache
        if key not in cache:
            cache[key] = self._build_layer(pos, token)
        return cache[key]

    def _build_layer(self, pos: int, token: str) -> LayerSpec | None:
        if token == SKIP:
            return None
        _, cin, cout, s, _ = self._positions[pos]
        k, e = int(token[1:token.index("e")]), int(token[token.index("e") + 1:])
        r = self._resolutions[pos]
        return mbconv_spec(cin, cout, k, e, s, (r, r))

    # ---- block string ------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        self.validate(arch)
        parts, i = [], 0
        for _, n, _ in STAGES:
            parts.append(" ".join(arch.genes[i:i + n]))
            i += n
        return " | ".join(parts)

    def parse(self, text: str) -> Arch:
        stages = [s.split() for s in text.strip().split("|")]
        if len(stages) != len(STAGES):
            raise ArchError(f"mbconv block string needs {len(STAGES)} stages separated by '|', got {len(stages)}: {text!r}")
        genes: list[str] = []
        for st, (tokens, (_, n, _)) in enumerate(zip(stages, STAGES)):
            if len(tokens) != n:
                raise ArchError(f"mbconv stage {st} needs {n} layer tokens, got {len(tokens)}: {' '.join(tokens)!r}")
            for j, tok in enumerate(tokens):
                valid = self.decisions[len(genes)].choices
                if tok not in valid:
                    why = " (the first layer of a stage changes shape, so it cannot be skipped)" if tok == SKIP else ""
                    raise ArchError(f"mbconv stage {st} layer {j}: bad token {tok!r}{why}; valid: {', '.join(valid)}")
                genes.append(tok)
        return self.make(genes)

    # ---- torch -------------------------------------------------------------------------------
    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        import torch.nn as nn
        specs = self.layers(arch)
        if num_classes is not None and num_classes != self.num_classes:
            head = specs[-1]
            specs[-1] = head_spec(head.kwargs["cin"], head.kwargs["cmid"], num_classes, head.input_shape[1:])
        return nn.Sequential(*[build_layer(s) for s in specs])
