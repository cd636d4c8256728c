"""NATS-Bench size search space `sss` (Dong et al., TPAMI 2021).

The topology is fixed to NAS-Bench-201's best CIFAR cell; what varies is the width of the five
layers of the macro net: cell (c1) -> residual block (c2, stride 2) -> cell (c3) -> residual block
(c4, stride 2) -> cell (c5), after a stem of width c1 and before BN + ReLU + pool + linear (one
cell per stage, N=1). Each width is one of 8, 16, ..., 64: 8^5 = 32,768 archs. In a cell whose
input width differs from its own, the edges leaving the input map the widths (`nb201_ops`).

Genes: the five widths. Block string: ``c1:c2:c3:c4:c5``, e.g. ``64:64:64:64:64`` (the largest).
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from nas.core.arch import Arch
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import Decision, SearchSpace
from search_spaces.nb201_ops import build_macro, macro_joins, macro_layers

if TYPE_CHECKING:
    import torch.nn as nn

WIDTHS: tuple[int, ...] = (8, 16, 24, 32, 40, 48, 56, 64)
LAYERS = 5
#: NATS-Bench's fixed topology for `sss` (NAS-Bench-201's best CIFAR-10 cell), in nb201 edge order
TOPOLOGY: tuple[str, ...] = ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3",
                             "nor_conv_3x3")


class NATSSizeSpace(SearchSpace):
    name = "nats_sss"
    presets = {"largest": "64:64:64:64:64", "smallest": "8:8:8:8:8",
               "nb201-widths": "16:32:32:64:64"}

    def __init__(self, num_classes: int = 10, resolution: int = 32) -> None:
        if not 1 <= int(num_classes) <= 10 ** 6:
            raise ValueError(f"num_classes {num_classes} outside [1, 1000000]")
        if not 4 <= int(resolution) <= 4096:
            raise ValueError(f"resolution {resolution} outside [4, 4096]")
        self.num_classes, self.resolution = int(num_classes), int(resolution)

    def options(self) -> dict[str, object]:
        return {"num_classes": self.num_classes, "resolution": self.resolution}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    @cached_property
    def decisions(self) -> list[Decision]:
        return [Decision(f"c{i + 1}", WIDTHS) for i in range(LAYERS)]

    # ---- block string --------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return ":".join(str(c) for c in arch.genes)

    def parse(self, text: str) -> Arch:
        parts = text.strip().split(":")
        valid = ", ".join(map(str, WIDTHS))
        if len(parts) != LAYERS:
            raise ArchError(f"nats_sss block string {text!r} needs {LAYERS} widths joined by ':' "
                            f"(e.g. 64:64:64:64:64); valid widths: {valid}")
        genes = []
        for i, part in enumerate(parts):
            if part.strip() not in {str(w) for w in WIDTHS}:   # no int(): a 5000-digit or non-ASCII digit string
                raise ArchError(f"nats_sss width c{i + 1}: bad value {part!r}; valid widths: {valid}")
            genes.append(int(part))
        return self.make(genes)

    # ---- layers and nets -----------------------------------------------------------------------
    @staticmethod
    def _cells(widths: tuple[int, ...]) -> list[tuple[tuple[str, ...], int, int]]:
        c1, c2, c3, c4, c5 = widths
        return [(TOPOLOGY, c1, c1), (TOPOLOGY, c2, c3), (TOPOLOGY, c4, c5)]

    def _plan(self, widths: tuple[int, ...]) -> list[tuple[str, LayerSpec | None, int]]:
        c1, c2, c3, c4, _ = widths
        return macro_layers(self._cells(widths), [(c1, c2), (c3, c4)], c1, self.num_classes, self.resolution, 1)

    def layers(self, arch: Arch) -> list[LayerSpec]:
        self.validate(arch)
        return [spec for _, spec, _ in self._plan(tuple(arch.genes)) if spec is not None]

    def all_layers(self) -> list[LayerSpec]:
        """Every layer depends on at most two adjacent widths: enumerate the pairs (not all 32,768 archs)."""
        seen: dict[str, LayerSpec] = {}
        for a in WIDTHS:
            for b in WIDTHS:
                for pos in range(LAYERS - 1):
                    widths = [a] * LAYERS
                    widths[pos], widths[pos + 1] = a, b
                    for spec in self.layers(self.make(widths)):
                        seen.setdefault(spec.key, spec)
        return list(seen.values())

    def join_layers(self, arch: Arch) -> list[LayerSpec]:
        self.validate(arch)
        return [spec for spec, _ in macro_joins(self._cells(tuple(arch.genes)), self.resolution, 1)]

    def all_join_layers(self) -> list[LayerSpec]:
        """A cell's sums depend on its output width alone."""
        seen: dict[str, LayerSpec] = {}
        for w in WIDTHS:
            for spec in self.join_layers(self.make([w] * LAYERS)):
                seen.setdefault(spec.key, spec)
        return list(seen.values())

    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        self.validate(arch)
        widths = tuple(arch.genes)
        space = self if num_classes in (None, self.num_classes) else NATSSizeSpace(int(num_classes), self.resolution)
        return build_macro(space._plan(widths), space._cells(widths))
