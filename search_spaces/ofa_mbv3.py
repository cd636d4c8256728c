"""Once-for-All's elastic MobileNetV3 at width 1.0 (Cai et al., ICLR 2020), as a search space.

Fixed: stem conv 3x3/2 (16, h-swish) -> MBConv k3 e1 16->16 (ReLU, residual). Searchable: five
stages of up to four MBConv blocks (widths 24, 40, 80, 112, 160; first-block strides 2, 2, 2, 1, 2;
ReLU in the first two stages, h-swish in the last three; squeeze-excite in stages 2, 4 and 5, as in
MobileNetV3-Large). Each block picks a kernel 3/5/7 and an expansion 3/4/6 ("k5e4"); the last two
blocks of a stage may be "skip" (stage depth 2-4). Those two slots have the same shapes (input width,
stride 1), so a stage is its non-skip blocks in order: "k3e3 skip" and "skip k3e3" there are one net,
as with skips in `mbconv`; `canonical` moves skips to the end (OFA's form). Fixed head:
1x1 conv 160->960 (h-swish), global pool, 1x1 conv 960->1280 (no BN, h-swish), linear -> classes.
Expansion widths are make_divisible(cin * e, 8), SE widths make_divisible(mid // 4, 8), as in OFA.

Block string: the stages' tokens separated by " | ", e.g.
``k3e4 k5e6 skip skip | k7e3 k3e3 k3e3 skip | ...``.

OFA's own encoding (DyNAS-T's CSV columns `ks`, `e`, `d`: 20 kernel sizes, 20 expansions, 5 depths;
slots beyond a stage's depth hold values that do not matter): `from_ofa` / `to_ofa`.
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Sequence

from nas.core.arch import Arch
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import Decision
from search_spaces.chain import ChainLayers
from search_spaces.mbv3_ops import ir_block_spec, v3_head_spec
from search_spaces.ops import MAX_CLASSES, MAX_RESOLUTION, build_layer, conv_out, conv_spec, make_divisible

if TYPE_CHECKING:
    import torch.nn as nn

#: (width, stride of the first block, activation, squeeze-excite) of the five elastic stages (OFA, width 1.0)
STAGES: tuple[tuple[int, int, str, bool], ...] = (
    (24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "hswish", False),
    (112, 1, "hswish", True), (160, 2, "hswish", True))
MAX_DEPTH, MIN_DEPTH = 4, 2
KERNELS: tuple[int, ...] = (3, 5, 7)
EXPANSIONS: tuple[int, ...] = (3, 4, 6)
SKIP = "skip"
STEM, FIRST, FINAL_EXPAND, LAST = 16, 16, 960, 1280


def _token(k: int, e: int) -> str:
    return f"k{k}e{e}"


def _parse_token(token: str) -> tuple[int, int]:
    return int(token[1:token.index("e")]), int(token[token.index("e") + 1:])


class OFAMobileNetV3Space(ChainLayers):
    name = "ofa_mbv3"
    presets = {
        "ofa-min": " | ".join(["k3e3 k3e3 skip skip"] * 5),
        "ofa-max": " | ".join(["k7e6 k7e6 k7e6 k7e6"] * 5),
    }

    def __init__(self, resolution: int = 224, num_classes: int = 1000) -> None:
        if not 32 <= int(resolution) <= MAX_RESOLUTION:
            raise ValueError(f"resolution {resolution} outside [32, {MAX_RESOLUTION}]")
        if not 1 <= int(num_classes) <= MAX_CLASSES:
            raise ValueError(f"num_classes {num_classes} outside [1, {MAX_CLASSES}]")
        self.resolution = int(resolution)
        self.num_classes = int(num_classes)

    def options(self) -> dict[str, object]:
        return {"resolution": self.resolution, "num_classes": self.num_classes}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    # ---- structure ---------------------------------------------------------------------------
    @cached_property
    def _ops(self) -> tuple[str, ...]:
        return tuple(_token(k, e) for k in KERNELS for e in EXPANSIONS)

    @cached_property
    def _positions(self) -> list[tuple[int, int, int, int, int]]:
        """Per block slot: (stage, slot in stage, cin, stride, input resolution)."""
        out = []
        cin, r = FIRST, conv_out(self.resolution, 3, 2)
        for st, (width, stride, _, _) in enumerate(STAGES):
            for j in range(MAX_DEPTH):
                s = stride if j == 0 else 1
                out.append((st, j, cin if j == 0 else width, s, r))
                r = conv_out(r, 3, s)
            cin = width
        return out

    @cached_property
    def decisions(self) -> list[Decision]:
        return [Decision(f"s{st}.b{j}", self._ops + ((SKIP,) if j >= MIN_DEPTH else ()))
                for st, j, _, _, _ in self._positions]

    def _layer(self, pos: int, token: str) -> LayerSpec | None:
        if token == SKIP:
            return None
        st, _, cin, s, r = self._positions[pos]
        width, _, act, se = STAGES[st]
        k, e = _parse_token(token)
        mid = make_divisible(round(cin * e), 8)
        return ir_block_spec(cin, mid, width, k, s, r, make_divisible(mid // 4, 8) if se else 0, act)

    def _fixed(self) -> tuple[list[LayerSpec], LayerSpec]:
        r0 = self.resolution
        r1 = conv_out(r0, 3, 2)
        pre = [conv_spec(3, STEM, 3, 2, (r0, r0), act="hswish"), ir_block_spec(STEM, STEM, FIRST, 3, 1, r1)]
        r = self._positions[-1][4]
        return pre, v3_head_spec(STAGES[-1][0], FINAL_EXPAND, LAST, self.num_classes, r)

    # ---- OFA's encoding ----------------------------------------------------------------------
    def from_ofa(self, ks: Sequence[int], e: Sequence[int], d: Sequence[int]) -> Arch:
        """The arch of OFA's (ks, e, d) lists (20, 20, 5 values); slots past a stage's depth are ignored."""
        n = len(STAGES) * MAX_DEPTH
        if len(ks) != n or len(e) != n or len(d) != len(STAGES):
            raise ArchError(f"OFA encoding needs {n} kernel sizes, {n} expansions and {len(STAGES)} depths; "
                            f"got {len(ks)}, {len(e)}, {len(d)}")
        genes: list[str] = []
        for st, depth in enumerate(d):
            if int(depth) not in range(MIN_DEPTH, MAX_DEPTH + 1):
                raise ArchError(f"OFA depth {depth!r} of stage {st} is not one of {MIN_DEPTH}-{MAX_DEPTH}")
            for j in range(MAX_DEPTH):
                i = st * MAX_DEPTH + j
                if j >= int(depth):
                    genes.append(SKIP)
                    continue
                if int(ks[i]) not in KERNELS or int(e[i]) not in EXPANSIONS:
                    raise ArchError(f"OFA block {i}: kernel {ks[i]!r} / expansion {e[i]!r}; valid kernels "
                                    f"{', '.join(map(str, KERNELS))}, expansions {', '.join(map(str, EXPANSIONS))}")
                genes.append(_token(int(ks[i]), int(e[i])))
        return self.make(genes)

    def canonical(self, arch: Arch) -> Arch:
        """The same net with each stage's skips at its end (OFA's order; what `from_ofa` returns)."""
        self.validate(arch)
        genes: list[str] = []
        for st in range(len(STAGES)):
            stage = arch.genes[st * MAX_DEPTH:(st + 1) * MAX_DEPTH]
            active = [g for g in stage if g != SKIP]
            genes += active + [SKIP] * (MAX_DEPTH - len(active))
        return self.make(genes)

    def to_ofa(self, arch: Arch) -> tuple[list[int], list[int], list[int]]:
        """OFA's (ks, e, d) of `arch` (its canonical form); skipped slots get the smallest choices (k3, e3)."""
        genes = self.canonical(arch).genes
        ks, es, d = [], [], []
        for st in range(len(STAGES)):
            stage = genes[st * MAX_DEPTH:(st + 1) * MAX_DEPTH]
            d.append(sum(g != SKIP for g in stage))
            for g in stage:
                k, e = _parse_token(g) if g != SKIP else (KERNELS[0], EXPANSIONS[0])
                ks.append(k)
                es.append(e)
        return ks, es, d

    # ---- block string ------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return " | ".join(" ".join(arch.genes[i:i + MAX_DEPTH]) for i in range(0, len(arch.genes), MAX_DEPTH))

    def parse(self, text: str) -> Arch:
        stages = [s.split() for s in text.strip().split("|")]
        if len(stages) != len(STAGES):
            raise ArchError(f"ofa_mbv3 block string needs {len(STAGES)} stages separated by '|', got "
                            f"{len(stages)}: {text[:200]!r}")
        genes: list[str] = []
        for st, tokens in enumerate(stages):
            if len(tokens) != MAX_DEPTH:
                raise ArchError(f"ofa_mbv3 stage {st} needs {MAX_DEPTH} block tokens (skip for unused blocks), "
                                f"got {len(tokens)}: {' '.join(tokens)[:200]!r}")
            for j, tok in enumerate(tokens):
                valid = self.decisions[len(genes)].choices
                if tok not in valid:
                    why = f" (a stage has at least {MIN_DEPTH} blocks)" if tok == SKIP else ""
                    raise ArchError(f"ofa_mbv3 stage {st} block {j}: bad token {tok[:60]!r}{why}; "
                                    f"valid: {', '.join(valid)}")
                genes.append(tok)
        return self.make(genes)

    # ---- torch -------------------------------------------------------------------------------
    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        import torch.nn as nn
        specs = self.layers(arch)
        if num_classes is not None and num_classes != self.num_classes:
            head = specs[-1]
            specs[-1] = v3_head_spec(head.kwargs["cin"], head.kwargs["c1"], head.kwargs["c2"], num_classes,
                                     head.input_shape[1])
        return nn.Sequential(*[build_layer(s) for s in specs])
