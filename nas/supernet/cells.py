"""Weight-sharing supernet of the NASNet / DARTS cell space (one-shot, as in ENAS and SPOS).

ENAS (Pham et al. 2018, Sec. 2.3) shares weights between the child models of the cell space by
keeping one set of parameters per (node, input, operation): an arch is a choice of edges and ops,
and every arch that picks the same op on the same edge reuses its weights. Single Path One-Shot
(Guo et al. 2020) trains such a supernet by running one uniformly sampled path per step and
recalibrates BatchNorm statistics per path before scoring it. This module builds that supernet from
the space's own layer specs:

* every cell position of the macro net (stem -> N normal -> reduce -> ...) holds one module per
  edge (block j, input state x) and op - the very module ``build_layer`` makes for the standalone
  net (``space._op(pos, x, op)``); a block whose two halves are the same (input, op) - possible in
  the NASNet variant - runs that one module twice;
* the cell-input preprocessing and the head depend on the width of the previous cell outputs, which
  in the NASNet variant depends on how many blocks are concatenated: one module per possible width;
* ``sampling = "uniform"`` asks `nas.supernet.trainer.train_supernet` for SPOS training (uniform
  single paths, no sandwich teacher): a cell space has no natural "largest" net to distil from.

``extract(arch)`` returns the state dict of ``space.build(arch)`` filled from the path's modules, so
the standalone net computes exactly what the supernet path computes (tested in eval mode).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from search_spaces.cell_graph import used_inputs
from search_spaces.nasnet import NASNetSpace
from search_spaces.ops import build_layer, head_spec

ModuleDict = nn.ModuleDict


def edge_key(block: int, x: int, op: str) -> str:
    """Name of the module of op `op` on the edge from state `x` into block `block`."""
    return f"b{block}_x{x}_{op}"


class CellSupernet(nn.Module):
    """The nasnet space (either variant) as one supernet; `set_arch` picks the path `forward` runs."""

    sampling: ClassVar[str] = "uniform"

    def __init__(self, space: NASNetSpace, probes: int = 128, seed: int = 0) -> None:
        super().__init__()
        if not isinstance(space, NASNetSpace):
            raise UsageError(f"CellSupernet needs a nasnet space, got {space.name!r}")
        self.space = space
        self.stem = build_layer(space._stem())
        sizes = list(space._concat_sizes())
        self.positions = space._walk(sizes[0], sizes[0])[0]
        pre0: list[ModuleDict] = [nn.ModuleDict() for _ in self.positions]
        pre1: list[ModuleDict] = [nn.ModuleDict() for _ in self.positions]
        heads = nn.ModuleDict()
        for k_n in sizes:
            for k_r in sizes:
                walk, c_last, hw_last = space._walk(k_n, k_r)
                for i, pos in enumerate(walk):
                    s0, s1 = space._pre(pos)
                    for store, spec in ((pre0[i], s0), (pre1[i], s1)):
                        if str(spec.kwargs["cin"]) not in store:
                            store[str(spec.kwargs["cin"])] = build_layer(spec)
                if str(c_last) not in heads:
                    heads[str(c_last)] = build_layer(head_spec(c_last, 0, space.num_classes, (hw_last, hw_last)))
        self.pre0, self.pre1, self.heads = nn.ModuleList(pre0), nn.ModuleList(pre1), heads
        self.edges = nn.ModuleList()
        for pos in self.positions:
            ops = nn.ModuleDict()
            for j in range(space.blocks):
                for x in range(2 + j):
                    for op in space.ops:
                        spec = space._op(pos, x, op)
                        ops[edge_key(j, x, op)] = nn.Identity() if spec is None else build_layer(spec)
            self.edges.append(ops)
        self._largest, self._smallest = self._extremes(probes, seed)
        self._plan: Any = None
        self.set_arch(self._largest)

    # ---- paths -------------------------------------------------------------------------------
    def _extremes(self, probes: int, seed: int) -> tuple[Arch, Arch]:
        """The archs with the most / fewest MACs among `probes` seeded samples and the presets."""
        rng = np.random.default_rng(seed)
        candidates = [self.space.sample(rng) for _ in range(probes)]
        for text in self.space.presets.values():
            try:
                candidates.append(self.space.parse(text))
            except NasError:
                continue
        macs = [self.space.macs(a) for a in candidates]
        return candidates[int(np.argmax(macs))], candidates[int(np.argmin(macs))]

    def largest(self) -> Arch:
        return self._largest

    def smallest(self) -> Arch:
        return self._smallest

    def set_arch(self, arch: Arch) -> None:
        self._plan = self.space._plan(self.space.validate(arch))
        self._arch = arch

    @property
    def arch(self) -> Arch:
        return self._arch

    def _path(self) -> list[tuple[int, Any, tuple[int, ...], nn.Module | None, nn.Module | None, list[nn.Module]]]:
        """Per cell position: (index, cell, concat, pre0 or None, pre1 or None, the 2B op modules)."""
        _, cells, _ = self._plan
        out = []
        for i, (pos, cell, cat) in enumerate(cells):
            used = used_inputs(cell)
            s0, s1 = self.space._pre(pos)
            p0 = self.pre0[i][str(s0.kwargs["cin"])] if 0 in used else None
            p1 = self.pre1[i][str(s1.kwargs["cin"])] if 1 in used else None
            ops = [self.edges[i][edge_key(j, x, op)] for j, (a, oa, b, ob) in enumerate(cell)
                   for x, op in ((a, oa), (b, ob))]
            out.append((i, cell, cat, p0, p1, ops))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for _, cell, cat, p0, p1, ops in self._path():
            states: list[torch.Tensor | None] = [p0(s0) if p0 is not None else None,
                                                 p1(s1) if p1 is not None else None]
            for j, (a, _, b, _) in enumerate(cell):
                states.append(ops[2 * j](states[a]) + ops[2 * j + 1](states[b]))
            s0, s1 = s1, torch.cat([states[k] for k in cat], dim=1)  # type: ignore[misc]
        return self.heads[str(s1.shape[1])](s1)

    # ---- inherited weights -------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> dict[str, Any]:
        """A state dict for ``space.build(arch)`` (a CellNet: stem, cells.i.{pre0,pre1,ops.k}, head)."""
        self.set_arch(arch)
        state: dict[str, Any] = {}

        def put(prefix: str, module: nn.Module) -> None:
            for key, t in module.state_dict().items():
                state[f"{prefix}.{key}"] = t.detach().clone()

        put("stem", self.stem)
        c_last = None
        for i, _, cat, p0, p1, ops in self._path():
            for name, mod in (("pre0", p0), ("pre1", p1)):
                if mod is not None:
                    put(f"cells.{i}.{name}", mod)
            for k, mod in enumerate(ops):
                put(f"cells.{i}.ops.{k}", mod)
            c_last = len(cat) * self.positions[i].c
        put("head", self.heads[str(c_last)])
        return state


__all__ = ["CellSupernet", "edge_key"]
