"""NAS-Bench-201 topology space (Dong & Yang, ICLR 2020; the NATS-Bench topology space `tss`).

One cell, repeated through the benchmark's CIFAR macro net (`nb201_ops`: C=16, N=5 cells per stage,
residual reduction blocks, 32x32 inputs). The cell has 4 nodes and 6 edges, each edge one of
none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3: 5^6 = 15,625 archs.

Genes: the 6 edge ops in the order of the NAS-Bench-201 string (edges 0->1, 0->2, 1->2, 0->3, 1->3,
2->3). Block string: the benchmark's own, e.g.
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``
(node j's incoming edges ``op~i`` between bars, nodes joined by ``+``). The benchmark's arch index
is not a formula of the ops: `search_spaces.bench_data` maps strings to indices from the shipped data.

Every non-none edge is built and timed, as in the benchmark's own nets, even when a `none` edge
leaves its node disconnected from the output (`live_edges` tells which edges reach it).

Option `candidates`: 'all' (default), 'naslib' (the 724 archs NASLib's zero-cost subset has ground
truth for on all of cifar10, cifar100 and ImageNet16-120) or a file of block strings, one per
line: sample, mutate and validate then stay inside that list (`search_spaces.candidates`).
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import Decision, SearchSpace
from search_spaces.candidates import CandidateSet, read_candidates
from search_spaces.nb201_ops import AVG, CONV3, EDGES, NB201_OPS, NONE, SKIP, build_macro, macro_joins, macro_layers, merged_edges

if TYPE_CHECKING:
    import torch.nn as nn

FIXED_SLOTS = ("stem", "res", "head")


def format_cell(ops: tuple[str, ...]) -> str:
    """The NAS-Bench-201 string of a cell given its 6 edge ops in EDGES order."""
    nodes = []
    for j in (1, 2, 3):
        nodes.append("|" + "|".join(f"{op}~{a}" for (a, b), op in zip(EDGES, ops) if b == j) + "|")
    return "+".join(nodes)


def parse_cell(text: str, space: str = "nb201") -> tuple[str, ...]:
    """Inverse of `format_cell`; raises ArchError naming the bad part and what is valid."""
    example = format_cell(("nor_conv_3x3",) * 6)
    stripped = text.strip()
    nodes = stripped.split("+")
    if len(nodes) != 3:
        raise ArchError(f"{space} block string {text!r} needs 3 nodes joined by '+' (NAS-Bench-201 string, "
                        f"e.g. {example}); valid ops: {', '.join(NB201_OPS)}")
    ops: dict[tuple[int, int], str] = {}
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")) or len(node) < 2:
            raise ArchError(f"{space} node {j} {node!r} must be '|op~input|...|'; valid: e.g. {example}")
        tokens = node[1:-1].split("|")
        if len(tokens) != j:
            raise ArchError(f"{space} node {j} needs {j} edge(s), got {len(tokens)} in {node!r}")
        for i, tok in enumerate(tokens):
            op, sep, src = tok.partition("~")
            if op not in NB201_OPS:
                raise ArchError(f"{space} node {j}: bad op {op!r} in {tok!r}; valid ops: {', '.join(NB201_OPS)}")
            if sep != "~" or src != str(i):
                raise ArchError(f"{space} node {j}: bad input in {tok!r}; valid: {op}~{i} (edges are listed "
                                f"from input 0 up)")
            ops[(i, j)] = op
    return tuple(ops[e] for e in EDGES)


def live_edges(ops: tuple[str, ...]) -> tuple[bool, ...]:
    """Per edge, whether it lies on a path of non-none edges from the cell input to its output."""
    fwd = {0}
    for a, b in sorted(EDGES, key=lambda e: e[1]):
        if a in fwd and ops[EDGES.index((a, b))] != NONE:
            fwd.add(b)
    back = {3}
    for a, b in sorted(EDGES, key=lambda e: -e[0]):
        if b in back and ops[EDGES.index((a, b))] != NONE:
            back.add(a)
    return tuple(op != NONE and a in fwd and b in back for (a, b), op in zip(EDGES, ops))


def used_edges(ops: tuple[str, ...]) -> tuple[bool, ...]:
    """Per edge, whether its result reaches the cell output through non-none edges."""
    back = {3}
    for a, b in sorted(EDGES, key=lambda e: -e[0]):
        if b in back and ops[EDGES.index((a, b))] != NONE:
            back.add(a)
    return tuple(op != NONE and b in back for (_, b), op in zip(EDGES, ops))


class NB201Space(SearchSpace):
    name = "nb201"
    relu_join_op = "nb201_relu"
    presets = {
        # the best CIFAR-10 cell of NAS-Bench-201 (also the fixed topology of the NATS size space)
        "nb201-best": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
        "resnet-like": "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|",
    }

    def __init__(self, channels: int = 16, cells: int = 5, num_classes: int = 10, resolution: int = 32,
                 candidates: str = "all") -> None:
        for label, value, low, high in (("channels", channels, 1, 4096), ("cells", cells, 1, 64),
                                        ("num_classes", num_classes, 1, 10 ** 6), ("resolution", resolution, 4, 4096)):
            if not low <= int(value) <= high:
                raise ValueError(f"{label} {value} outside [{low}, {high}]")
        self.channels, self.cells = int(channels), int(cells)
        self.num_classes, self.resolution = int(num_classes), int(resolution)
        self.candidates = str(candidates)
        self._candidates: CandidateSet | None = None
        if self.candidates != "all":
            self._candidates = self._load_candidates(self.candidates)

    def _load_candidates(self, spec: str) -> CandidateSet:
        """'naslib': the archs with NASLib ground truth on all three datasets; else a candidate file."""
        if spec == "naslib":
            from search_spaces.bench_data import NB201_DATASETS, NB201_ZC, nb201_records
            common = set.intersection(*(set(nb201_records(d)) for d in NB201_DATASETS))
            return CandidateSet(tuple(self.parse(a) for a in sorted(common)), f"naslib ({NB201_ZC.name})")
        if not Path(spec).is_file():
            raise ValueError(f"candidates {spec!r} is neither 'all', 'naslib' nor a candidate file")
        return read_candidates(self, spec)

    def options(self) -> dict[str, object]:
        opts: dict[str, object] = {"channels": self.channels, "cells": self.cells, "num_classes": self.num_classes,
                                   "resolution": self.resolution}
        if self.candidates != "all":
            opts["candidates"] = self.candidates
        return opts

    # ---- candidate list (search only archs with ground truth) ----------------------------------
    def check_constraints(self, arch: Arch) -> None:
        if self._candidates is not None and arch not in self._candidates:
            raise ArchError(f"nb201 arch {format_cell(tuple(arch.genes))!r} is not in the candidate list "
                            f"{self._candidates.source} ({len(self._candidates)} archs)")

    def sample(self, rng: np.random.Generator) -> Arch:
        return super().sample(rng) if self._candidates is None else self._candidates.sample(rng)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        if self._candidates is None:
            return super().mutate(arch, rng)
        return self._candidates.mutate(self.validate(arch), rng)

    def size(self) -> float:
        return super().size() if self._candidates is None else float(len(self._candidates))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    @cached_property
    def decisions(self) -> list[Decision]:
        return [Decision(f"edge{a}->{b}", NB201_OPS) for a, b in EDGES]

    # ---- block string --------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return format_cell(tuple(arch.genes))

    def parse(self, text: str) -> Arch:
        return self.make(parse_cell(text, self.name))

    # ---- layers and nets -----------------------------------------------------------------------
    def _cells(self, ops: tuple[str, ...]) -> list[tuple[tuple[str, ...], int, int]]:
        widths = [self.channels * 2 ** (i // self.cells) for i in range(3 * self.cells)]
        return [(ops, c, c) for c in widths]

    def _plan(self, ops: tuple[str, ...]) -> list[tuple[str, LayerSpec | None, int]]:
        c = self.channels
        return macro_layers(self._cells(ops), [(c, 2 * c), (2 * c, 4 * c)], c, self.num_classes,
                            self.resolution, self.cells)

    def layers(self, arch: Arch) -> list[LayerSpec]:
        self.validate(arch)
        return [spec for _, spec, _ in self._plan(tuple(arch.genes)) if spec is not None]

    def live_layers(self, arch: Arch) -> list[LayerSpec]:
        """The graph a dead-code-eliminating runtime runs: edges whose result never reaches the cell
        output are dropped (edges fed only by `none` still run: their zero input is computed at run
        time); a cell whose output no input reaches makes the whole net's output a constant, folded
        away: no layers at all. (On raspi4's measured latencies this fits far better than all built
        ops; see latency/calibrate.py.)"""
        self.validate(arch)
        ops = tuple(arch.genes)
        if not any(live_edges(ops)):
            return []
        keep = used_edges(ops)
        return [spec for slot, spec, e in self._plan(ops) if spec is not None and (slot != "edge" or keep[e])]

    def graph_layers(self, arch: Arch) -> list[LayerSpec]:
        """`layers` without the average pools the exported graph merges (`nb201_ops.merged_edges`)."""
        self.validate(arch)
        ops = tuple(arch.genes)
        merged = [m for c in self._cells(ops) for m in merged_edges(*c)]
        out, k = [], 0
        for slot, spec, _ in self._plan(ops):
            if slot == "edge":
                k += 1
                if merged[k - 1]:
                    continue
            if spec is not None:
                out.append(spec)
        return out

    def separable_layers(self) -> tuple[list[LayerSpec], list[list[list[LayerSpec]]]]:
        fixed = [spec for slot, spec, _ in self._plan((NONE,) * 6) if slot in FIXED_SLOTS and spec is not None]
        per: list[list[list[LayerSpec]]] = [[] for _ in EDGES]
        for op in NB201_OPS:
            specs: list[list[LayerSpec]] = [[] for _ in EDGES]
            for slot, spec, e in self._plan((op,) * 6):
                if slot == "edge" and spec is not None:
                    specs[e].append(spec)
            for e in range(len(EDGES)):
                per[e].append(specs[e])
        return fixed, per

    def all_layers(self) -> list[LayerSpec]:
        return _distinct(*self.separable_layers())

    def join_layers(self, arch: Arch) -> list[LayerSpec]:
        """Node sums, zero edges and the ReLU requantizations a node tensor pays when ReLU-conv edges
        and other ops both read it (`nb201_ops.relu_joins`)."""
        self.validate(arch)
        return [spec for spec, _ in macro_joins(self._cells(tuple(arch.genes)), self.resolution, self.cells,
                                                relus=True)]

    def separable_join_layers(self) -> None:
        """None: whether a node pays a ReLU requantization depends on several edges of the cell."""
        return None

    def all_join_layers(self) -> list[LayerSpec]:
        # (conv, skip, pool) on the edges from node 0 makes node 0 a mixed tensor: every relu join occurs
        mixed = (CONV3, SKIP, CONV3, AVG, CONV3, CONV3)
        specs = [spec for op in NB201_OPS for spec, _ in macro_joins(self._cells((op,) * 6), self.resolution,
                                                                      self.cells)]
        specs += [spec for spec, _ in macro_joins(self._cells(mixed), self.resolution, self.cells, relus=True)]
        return list({s.key: s for s in specs}.values())

    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        self.validate(arch)
        ops = tuple(arch.genes)
        space = self if num_classes in (None, self.num_classes) else \
            NB201Space(self.channels, self.cells, int(num_classes), self.resolution)
        return build_macro(space._plan(ops), space._cells(ops))


def _distinct(fixed: list[LayerSpec], per: list[list[list[LayerSpec]]]) -> list[LayerSpec]:
    """The distinct layers (by key, first seen first) of a `separable_layers`-shaped split."""
    seen = {s.key: s for s in fixed}
    for choices in per:
        for specs in choices:
            for s in specs:
                seen.setdefault(s.key, s)
    return list(seen.values())
