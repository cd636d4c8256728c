"""Weight-sharing supernet of a layer-chain space whose layers may sit at several positions (HyTra).

BossNAS (Li et al. 2021, Sec. 3.1) trains its HyTra search space as one *fabric*: at every layer
and every scale the supernet holds a residual convolution block and a residual attention block
(plus their down-sampling versions), and an architecture is one path through the fabric - a
sub-network of the enlarged net. We build exactly that from the space's own vocabulary: for each
position of ``space.layers(arch)`` the space lists, in ``fabric_layers()``, every layer a valid
arch can put there; the supernet holds one module per (position, layer) - the very module
``build_layer`` makes for the standalone net - and ``set_arch`` picks one per position.

Inherited weights are therefore exact: ``extract(arch)`` copies the path's modules into the state
dict of ``space.build(arch)`` (a ``Sequential`` of the same layers), so the standalone net computes
what the supernet path computes. Each module's BatchNorm only ever sees inputs of its own position
and choice; `recalibrate_bn` re-estimates the statistics of a path before it is scored.

``largest()`` / ``smallest()`` (the sandwich rule's extremes) are the archs with the most and the
fewest multiply-accumulates among `probes` seeded uniform samples and the space's presets (those valid for its options).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace
from search_spaces.ops import build_layer, layer_macs


class FabricSupernet(nn.Module):
    """One module per (position, candidate layer); a path is one candidate per position."""

    def __init__(self, space: SearchSpace, probes: int = 512, seed: int = 0) -> None:
        super().__init__()
        fabric = getattr(space, "fabric_layers", None)
        if not callable(fabric):
            raise UsageError(f"space {space.name!r} lists no fabric_layers(); FabricSupernet cannot hold it")
        self.space = space
        self._index: list[dict[str, str]] = []
        cells = []
        for specs in fabric():
            names = {s.key: f"c{j}" for j, s in enumerate(specs)}
            self._index.append(names)
            cells.append(nn.ModuleDict({names[s.key]: build_layer(s) for s in specs}))
        self.cells = nn.ModuleList(cells)
        rng = np.random.default_rng(seed)
        candidates = [space.sample(rng) for _ in range(probes)]
        for text in getattr(space, "presets", {}).values():
            try:
                candidates.append(space.parse(text))
            except NasError:       # a preset of the default options that this variant cannot express
                continue
        macs = [sum(layer_macs(s) for s in space.layers(a)) for a in candidates]
        self._largest = candidates[int(np.argmax(macs))]
        self._smallest = candidates[int(np.argmin(macs))]
        self._path: list[str] = []
        self.set_arch(self._largest)

    # ---- paths -------------------------------------------------------------------------------
    def largest(self) -> Arch:
        return self._largest

    def smallest(self) -> Arch:
        return self._smallest

    def _names(self, arch: Arch) -> list[str]:
        specs = self.space.layers(self.space.validate(arch))
        if len(specs) != len(self.cells):
            raise UsageError(f"{self.space.name} arch has {len(specs)} layers, the fabric {len(self.cells)} positions")
        names = []
        for pos, spec in enumerate(specs):
            name = self._index[pos].get(spec.key)
            if name is None:
                raise UsageError(f"layer {spec.key} at position {pos} is not in the {self.space.name} fabric")
            names.append(name)
        return names

    def set_arch(self, arch: Arch) -> None:
        self._path = self._names(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for cell, name in zip(self.cells, self._path):
            x = cell[name](x)
        return x

    # ---- inherited weights -------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> dict[str, Any]:
        """A state dict for ``space.build(arch)``: position i of the path becomes module ``i``."""
        state: dict[str, Any] = {}
        for pos, name in enumerate(self._names(arch)):
            for key, t in self.cells[pos][name].state_dict().items():
                state[f"{pos}.{key}"] = t.detach().clone()
        return state
