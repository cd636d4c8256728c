"""Layer specs of a chain space: fixed layers around one optional layer per decision.

`mbconv` and `ofa_mbv3` are such chains (a stem, one block or skip per slot, a head): each gives
`_fixed()` (the layers before the slots, and the head) and `_layer(slot, choice)` (the slot's layer, or
None for a skip), and this mixin derives `layers`, `separable_layers` (what LUT sums and the exact
solver use) and `all_layers` (what profiling times) from them, so the three stay consistent.
"""
from __future__ import annotations

from nas.core.arch import Arch
from nas.core.layer import LayerSpec
from nas.core.space import SearchSpace


class ChainLayers(SearchSpace):
    def _fixed(self) -> tuple[list[LayerSpec], LayerSpec]:
        raise NotImplementedError

    def _layer(self, pos: int, token: str) -> LayerSpec | None:
        raise NotImplementedError

    def layers(self, arch: Arch) -> list[LayerSpec]:
        self.validate(arch)
        pre, head = self._fixed()
        body = [self._layer(i, g) for i, g in enumerate(arch.genes)]
        return pre + [b for b in body if b is not None] + [head]

    def separable_layers(self) -> tuple[list[LayerSpec], list[list[list[LayerSpec]]]]:
        pre, head = self._fixed()
        per = [[[spec] if (spec := self._layer(i, c)) else [] for c in d.choices]
               for i, d in enumerate(self.decisions)]
        return pre + [head], per

    def all_layers(self) -> list[LayerSpec]:
        fixed, per = self.separable_layers()
        seen: dict[str, LayerSpec] = {s.key: s for s in fixed}
        for choices in per:
            for specs in choices:
                for s in specs:
                    seen.setdefault(s.key, s)
        return list(seen.values())
