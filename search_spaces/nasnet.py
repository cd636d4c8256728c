"""NASNet cell space (Zoph et al. 2018) with a DARTS variant (Liu et al. 2019).

A net is two searched cells, a normal cell (stride 1) and a reduction cell (stride 2), stacked as
stem conv 3x3 (3C) -> N normal -> reduce -> N normal -> reduce -> N normal -> global pool + linear
(the CIFAR macro net of both papers; channels double at each reduction cell). A cell has two
inputs, h[i-2] (index 0) and h[i-1] (index 1, the previous cell), both brought to the cell's C
channels by a 1x1 conv (a factorized reduce when h[i-2] has twice the resolution), and B blocks:
block j adds op_a(state a) and op_b(state b), each state one of 0, 1 or an earlier block (2 + k).
In the reduction cell, ops applied to indices 0 and 1 have stride 2. Cell output:

* variant "nasnet": the concat of the blocks no other block uses (Zoph et al. 2018, Sec. 3);
  ops: the paper's full list of 13 (`cell_ops.NASNET_OPS`); B = 5.
* variant "darts": the concat of all blocks (nodes); ops: the 7 of a derived DARTS cell
  (`cell_ops.DARTS_OPS`); B = 4 and a node's two inputs must differ (DARTS keeps the two
  strongest edges from distinct predecessors). Input indices follow DARTS genotypes exactly.

Block string: ``normal: sep3x3(0)+id(1) sep5x5(1)+avg3x3(0) ... || reduce: ...``.
Genes: per cell, per block: input a, op a, input b, op b (one gene per decision). Canonical form:
each block's pair is sorted by (input, op position in the op list) and the blocks are put in the
topological order whose genes are smallest, so that isomorphic cells (blocks relabelled) are one
Arch. `parse` accepts any order and canonicalizes; `make`/`validate` reject non-canonical genes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Iterator, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch, Gene
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import Decision, SearchSpace
from search_spaces.cell_graph import Cell, canonical_cell, live_cells, used_inputs
from search_spaces.cell_ops import DARTS_NAMES, DARTS_OPS, IDENTITY, NASNET_OPS, cell_modules, combine_spec, \
    POOLS, op_spec, out_size, pre_spec
from search_spaces.ops import build_layer, conv_spec, head_spec

if TYPE_CHECKING:
    import torch.nn as nn

CELLS = ("normal", "reduce")
VARIANT_OPS: dict[str, tuple[str, ...]] = {"nasnet": NASNET_OPS, "darts": DARTS_OPS}
DEFAULT_BLOCKS = {"nasnet": 5, "darts": 4}
MAX_BLOCKS = 8
STEM_MULTIPLIER = 3                         # stem width 3C (NASNet CIFAR; DARTS NetworkCIFAR)
_HALF = re.compile(r"^([a-z0-9_]+)\(([0-9]{1,9})\)$")   # bounded, ASCII: int() refuses > 4300 digits

# Presets in the papers' block order (parse canonicalizes). NASNet-A: Zoph et al. 2018, Fig. 4 /
# the TF release (nasnet_utils.NasNetANormalCell, NasNetAReductionCell) with indices swapped to
# DARTS' order; the cell output is this space's rule (unused blocks), as in DARTS' genotypes.NASNet
# - the TF release also concatenates h[i-2] (normal) and block 1 (reduction). DARTS: genotypes.py
# of the DARTS repo (V1 first order, V2 second order; Liu et al. 2019, Fig. 4-5 and Table 1).
NASNET_PRESETS = {
    "nasnet-a": "normal: sep5x5(1)+sep3x3(0) sep5x5(0)+sep3x3(0) avg3x3(1)+id(0) avg3x3(0)+avg3x3(0) "
                "sep3x3(1)+id(1) || reduce: sep5x5(1)+sep7x7(0) max3x3(1)+sep7x7(0) avg3x3(1)+sep5x5(0) "
                "id(3)+avg3x3(2) sep3x3(2)+max3x3(1)"}
DARTS_PRESETS = {
    "darts-v1": "normal: sep3x3(1)+sep3x3(0) id(0)+sep3x3(1) id(0)+sep3x3(1) sep3x3(0)+id(2) || "
                "reduce: max3x3(0)+max3x3(1) id(2)+max3x3(0) max3x3(0)+id(2) id(2)+avg3x3(0)",
    "darts-v2": "normal: sep3x3(0)+sep3x3(1) sep3x3(0)+sep3x3(1) sep3x3(1)+id(0) id(0)+dil3x3(2) || "
                "reduce: max3x3(0)+max3x3(1) id(2)+max3x3(1) max3x3(0)+id(2) id(2)+max3x3(1)"}


@dataclass(frozen=True)
class _Position:
    """One cell of the macro net: channels inside it, its inputs' channels and resolutions."""
    reduce: bool
    c: int
    cin_pp: int
    cin_p: int
    hw_pp: int
    hw_p: int
    hw: int


class NASNetSpace(SearchSpace):
    name = "nasnet"
    presets = NASNET_PRESETS   # class default; instances expose their variant's presets

    def __init__(self, variant: str = "nasnet", blocks: int | None = None, channels: int = 36, cells: int = 6,
                 num_classes: int = 10, resolution: int = 32) -> None:
        if variant not in VARIANT_OPS:
            raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANT_OPS)}")
        blocks = DEFAULT_BLOCKS[variant] if blocks is None else int(blocks)
        for label, value, low, high in (("blocks", blocks, 1, MAX_BLOCKS), ("channels", channels, 1, 4096),
                                        ("cells", cells, 1, 64), ("num_classes", num_classes, 1, 10 ** 6),
                                        ("resolution", resolution, 8, 4096)):
            if not low <= int(value) <= high:
                raise ValueError(f"{label} {value} outside [{low}, {high}]")
        self.variant = variant
        self.ops = VARIANT_OPS[variant]
        self.blocks, self.channels, self.cells = blocks, int(channels), int(cells)
        self.num_classes, self.resolution = int(num_classes), int(resolution)
        all_presets = NASNET_PRESETS if variant == "nasnet" else DARTS_PRESETS
        # per-instance presets (the class attribute is the default variant's): only those this
        # variant and block count can express
        self.__dict__["presets"] = all_presets if blocks == DEFAULT_BLOCKS[variant] else {}

    def options(self) -> dict[str, object]:
        return {"variant": self.variant, "blocks": self.blocks, "channels": self.channels, "cells": self.cells,
                "num_classes": self.num_classes, "resolution": self.resolution}

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (3, self.resolution, self.resolution)

    # ---- decisions and canonical form --------------------------------------------------------
    @cached_property
    def decisions(self) -> list[Decision]:
        out = []
        for cell in CELLS:
            for j in range(self.blocks):
                for slot in "ab":
                    out.append(Decision(f"{cell}.b{j}.in_{slot}", tuple(range(2 + j))))
                    out.append(Decision(f"{cell}.b{j}.op_{slot}", self.ops))
        return out

    def split(self, genes: Sequence[Gene]) -> tuple[Cell, Cell]:
        """(normal cell, reduction cell) as tuples of blocks (input a, op a, input b, op b)."""
        blocks = [tuple(genes[i:i + 4]) for i in range(0, len(genes), 4)]
        return tuple(blocks[:self.blocks]), tuple(blocks[self.blocks:])  # type: ignore[return-value]

    def canonicalize(self, genes: Sequence[Gene]) -> Arch:
        """A valid arch from genes in any block / pair order (raises ArchError on bad genes)."""
        decisions = self.decisions
        if len(genes) != len(decisions):
            raise ArchError(f"{self.name} arch needs {len(decisions)} genes, got {len(genes)}")
        for gene, d in zip(genes, decisions):
            if gene not in d.choices:
                raise ArchError(f"{d.name}: {gene!r} is not a valid choice; valid: "
                                f"{', '.join(map(str, d.choices))}")
        normal, reduce = self.split(genes)
        canon = canonical_cell(normal, self.ops) + canonical_cell(reduce, self.ops)
        return self.make([g for block in canon for g in block])

    def from_genotype(self, normal: Sequence[tuple[str, int]], reduce: Sequence[tuple[str, int]]) -> Arch:
        """An arch from DARTS-style genotype lists [(op, input), ...], two entries per block; op
        names may be DARTS primitive names ('sep_conv_3x3') or this space's tokens ('sep3x3')."""
        genes: list[Gene] = []
        for label, edges in (("normal", normal), ("reduce", reduce)):
            if len(edges) != 2 * self.blocks:
                raise ArchError(f"{label} genotype needs {2 * self.blocks} (op, input) edges, got {len(edges)}")
            for op, x in edges:
                genes += [int(x), DARTS_NAMES.get(op, op)]
        return self.canonicalize(genes)

    def check_constraints(self, arch: Arch) -> None:
        for label, cell in zip(CELLS, self.split(arch.genes)):
            if self.variant == "darts":
                for j, (a, _, b, _) in enumerate(cell):
                    if a == b:
                        raise ArchError(f"{label} block {j} takes input {a} twice; a DARTS node needs two "
                                        f"distinct inputs")
            if canonical_cell(cell, self.ops) != cell:
                raise ArchError(f"{label} cell is not in canonical order; canonical: "
                                f"{self._cell_text(canonical_cell(cell, self.ops))} "
                                f"(use parse() or canonicalize())")

    def sample(self, rng: np.random.Generator) -> Arch:
        genes: list[Gene] = [d.choices[rng.integers(len(d.choices))] for d in self.decisions]
        if self.variant == "darts":   # redraw input b among the others: uniform over ordered distinct pairs
            for i in range(0, len(genes), 4):
                if genes[i] == genes[i + 2]:
                    others = [x for x in self.decisions[i].choices if x != genes[i]]
                    genes[i + 2] = others[rng.integers(len(others))]
        return self.canonicalize(genes)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one gene, then canonicalize; never returns `arch` itself."""
        return self._mutate_one_gene(self.validate(arch), rng, self.canonicalize)

    def size(self) -> float:
        """Genotypes with each block's pair unordered (an upper bound: block relabellings of
        one cell are counted apart here but are one canonical arch)."""
        total = 1.0
        for j in range(self.blocks):
            n, m = 2 + j, float(len(self.ops))
            total *= n * (n - 1) / 2 * m * m if self.variant == "darts" else n * m * (n * m + 1) / 2
        return total ** 2

    def concat(self, cell: Cell) -> tuple[int, ...]:
        """State indices concatenated as the cell output (2 + k for block k)."""
        states = range(2, 2 + len(cell))
        if self.variant == "darts":
            return tuple(states)
        used = {x for a, _, b, _ in cell for x in (a, b)}
        return tuple(s for s in states if s not in used)

    # ---- block string ------------------------------------------------------------------------
    @staticmethod
    def _cell_text(cell: Cell) -> str:
        return " ".join(f"{oa}({a})+{ob}({b})" for a, oa, b, ob in cell)

    def format(self, arch: Arch) -> str:
        self.validate(arch)
        return " || ".join(f"{label}: {self._cell_text(cell)}" for label, cell in zip(CELLS, self.split(arch.genes)))

    def parse(self, text: str) -> Arch:
        parts = text.split("||")
        if len(parts) != 2:
            raise ArchError(f"nasnet block string needs two cells 'normal: ... || reduce: ...', got {len(parts)} "
                            f"part(s): {text!r}")
        genes: list[Gene] = []
        for label, part in zip(CELLS, parts):
            tokens = part.split()
            if not tokens or tokens[0] != f"{label}:":
                bad = tokens[0] if tokens else ""
                raise ArchError(f"bad cell label {bad!r}; valid: '{label}:' (write 'normal: ... || reduce: ...')")
            if len(tokens) - 1 != self.blocks:
                raise ArchError(f"{label} cell needs {self.blocks} blocks, got {len(tokens) - 1}: "
                                f"{' '.join(tokens[1:])!r}")
            for j, tok in enumerate(tokens[1:]):
                halves = tok.split("+")
                if len(halves) != 2:
                    raise ArchError(f"{label} block {j}: bad block token {tok!r}; valid: op(input)+op(input), "
                                    f"e.g. {self.ops[-1]}(0)+{self.ops[0]}(1)")
                for half in halves:
                    m = _HALF.match(half)
                    if m is None or m.group(1) not in self.ops:
                        bad = half if m is None else m.group(1)
                        raise ArchError(f"{label} block {j}: bad op token {bad!r} in {tok!r}; valid ops "
                                        f"({self.variant} variant): {', '.join(self.ops)}")
                    x = int(m.group(2))
                    if x >= 2 + j:
                        raise ArchError(f"{label} block {j}: bad input {x} in {tok!r}; valid inputs: "
                                        f"{', '.join(map(str, range(2 + j)))} (0 = h[i-2], 1 = h[i-1], "
                                        f"2+k = block k)")
                    genes += [x, m.group(1)]
        return self.canonicalize(genes)

    # ---- macro net and layers ----------------------------------------------------------------
    def _walk(self, k_normal: int, k_reduce: int) -> tuple[list[_Position], int, int]:
        """Cell positions for cell outputs of k_normal / k_reduce blocks; also final (channels, size)."""
        cpp = cp = STEM_MULTIPLIER * self.channels
        hpp = hp = self.resolution
        c, out = self.channels, []
        for stage in range(3):
            for i in range(self.cells + (stage > 0)):
                reduce = stage > 0 and i == 0
                c = 2 * c if reduce else c
                h = out_size(hp, 2) if reduce else hp
                out.append(_Position(reduce, c, cpp, cp, hpp, hp, h))
                cpp, cp, hpp, hp = cp, (k_reduce if reduce else k_normal) * c, hp, h
        return out, cp, hp

    def _stem(self) -> LayerSpec:
        r = self.resolution
        return conv_spec(3, STEM_MULTIPLIER * self.channels, 3, 1, (r, r), act="none")

    @staticmethod
    def _pre(pos: _Position) -> tuple[LayerSpec, LayerSpec]:
        s0 = 2 if pos.hw_pp != pos.hw_p else 1
        return (pre_spec(pos.cin_pp, pos.c, (pos.hw_pp, pos.hw_pp), s0),
                pre_spec(pos.cin_p, pos.c, (pos.hw_p, pos.hw_p), 1))

    @staticmethod
    def _op(pos: _Position, x: int, op: str) -> LayerSpec | None:
        """The op applied to state `x` in a cell at `pos`; None for a stride-1 identity."""
        s = 2 if pos.reduce and x < 2 else 1
        if op == IDENTITY and s == 1:
            return None
        hw = pos.hw_p if x < 2 else pos.hw
        return op_spec(op, pos.c, (hw, hw), s)

    def _plan(self, arch: Arch) -> tuple[LayerSpec, list[tuple[_Position, Cell, tuple[int, ...]]], LayerSpec]:
        self.validate(arch)
        normal, reduce = self.split(arch.genes)
        cat_n, cat_r = self.concat(normal), self.concat(reduce)
        positions, c_last, hw_last = self._walk(len(cat_n), len(cat_r))
        cells = [(p, reduce if p.reduce else normal, cat_r if p.reduce else cat_n) for p in positions]
        return self._stem(), cells, head_spec(c_last, 0, self.num_classes, (hw_last, hw_last))

    def layers(self, arch: Arch) -> list[LayerSpec]:
        """The layers the net runs once exported: a pool applied twice to one cell state counts once
        (`_cell_ops`), and a cell whose output no later cell (nor the head) reads is left out. Such
        dead cells occur when every block of the cells after it skips that input (e.g. no block reads
        h[i-1]: then every other cell is dead); the PyTorch module still computes them, but the ONNX
        export prunes them, so they cost no deployed latency (seen: a net measured at 4.9 ms whose
        full layer list summed to 9.6 ms)."""
        stem, cells, head = self._plan(arch)
        out = [stem]
        for (pos, cell, cat), live in zip(cells, live_cells([c for _, c, _ in cells])):
            if not live:
                continue
            used = used_inputs(cell)
            out += [spec for i, spec in enumerate(self._pre(pos)) if i in used]
            out += self._cell_ops(pos, cell)
            out.append(combine_spec(pos.c, self.blocks, len(cat), (pos.hw, pos.hw)))
        return out + [head]

    def _cell_ops(self, pos: _Position, cell: Cell) -> list[LayerSpec]:
        """The ops of one cell as exported: a pool applied twice to the same state is computed once
        (the export merges the two identical nodes; seen: NASNet-A's 58 pools are 42 ONNX nodes)."""
        out: list[LayerSpec] = []
        pooled: set[tuple[int, str]] = set()
        for a, oa, b, ob in cell:
            for x, op in ((a, oa), (b, ob)):
                spec = self._op(pos, x, op)
                if spec is None or (x, op) in pooled:
                    continue
                if op in POOLS:
                    pooled.add((x, op))
                out.append(spec)
        return out

    def _concat_sizes(self) -> range:
        return range(self.blocks, self.blocks + 1) if self.variant == "darts" else range(1, self.blocks + 1)

    def all_layers(self) -> list[LayerSpec]:
        seen: dict[str, LayerSpec] = {}

        def add(specs: Iterator[LayerSpec | None]) -> None:
            for s in specs:
                if s is not None:
                    seen.setdefault(s.key, s)

        add(iter([self._stem()]))
        sizes = self._concat_sizes()
        for k_n in sizes:
            for k_r in sizes:
                positions, c_last, hw_last = self._walk(k_n, k_r)
                for pos in positions:
                    add(iter(self._pre(pos)))
                    add(iter([combine_spec(pos.c, self.blocks, k_r if pos.reduce else k_n, (pos.hw, pos.hw))]))
                add(iter([head_spec(c_last, 0, self.num_classes, (hw_last, hw_last))]))
        # ops depend on the position only (not on cell output widths): one source that is a cell
        # input (stride 2 in a reduction cell) and, when B > 1, one that is a block output
        sources = [0, 2] if self.blocks > 1 else [0]
        for pos in self._walk(1, 1)[0]:
            add(self._op(pos, x, op) for op in self.ops for x in sources)
        return list(seen.values())

    # ---- torch -------------------------------------------------------------------------------
    def build(self, arch: Arch, num_classes: int | None = None) -> "nn.Module":
        import torch.nn as nn
        stem, cells, head = self._plan(arch)
        if num_classes is not None and num_classes != self.num_classes:
            head = head_spec(head.kwargs["cin"], 0, num_classes, head.input_shape[1:])
        modules = []
        for pos, cell, cat in cells:
            used = used_inputs(cell)  # an unread cell input is not preprocessed (nor timed)
            pre0, pre1 = (build_layer(s) if i in used else nn.Identity() for i, s in enumerate(self._pre(pos)))
            ops, inputs = [], []
            for a, oa, b, ob in cell:
                for x, op in ((a, oa), (b, ob)):
                    spec = self._op(pos, x, op)
                    ops.append(nn.Identity() if spec is None else build_layer(spec))
                    inputs.append(x)
            modules.append(cell_modules().Cell(pre0, pre1, nn.ModuleList(ops), inputs, cat))
        return cell_modules().CellNet(build_layer(stem), nn.ModuleList(modules), build_layer(head))
