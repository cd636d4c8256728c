"""Latency models: `predict(arch) -> ms`.

`LUTModel` sums a table's entries over `space.layers(arch)` and adds the per-network call overhead
recorded in the table once. When the table's metadata holds a learned correction
(`latency.correction`), each entry is shifted by its per-layer term and the intercept is added
once; the result is still a sum over layers. A missing entry raises `MissingEntryError` naming the key - never a
silent 0. Spaces whose layers depend on one decision each (`separable_layers`) get a vectorised
path: a (decisions x choices) matrix, so predicting a batch of encoded archs is one gather + sum.
"""
from __future__ import annotations

import logging
from typing import Callable, Protocol, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from latency.table import LatencyTable
from nas.core.arch import Arch
from nas.core.errors import ArchError
from nas.core.layer import LayerSpec
from nas.core.space import SearchSpace


log = logging.getLogger(__name__)


def layer_list(space: SearchSpace, metadata: dict) -> Callable[[Arch], list[LayerSpec]]:
    """The layers a table prices for an arch: `space.live_layers` for a table fitted on the live graph
    (metadata `graph` live), `space.graph_layers` for one that prices the exported graph (`graph`
    exported: int8 tables, whose layers are timed as in that graph), else `space.layers`; plus `space.join_layers` (node sums, zero edges)
    when the table timed them (metadata `joins`: int8 tables, where they are requantizing kernels)."""
    base = space.live_layers if metadata.get("graph") == "live" else space.layers
    if metadata.get("graph") == "exported":   # int8 tables: the layers of the exported graph (merged pools)
        base = space.graph_layers
    if not metadata.get("joins"):
        return base
    return lambda arch: base(arch) + space.join_layers(arch)


def _drop_foreign_entries(space: SearchSpace, table: LatencyTable) -> None:
    """Entries that are no layer of `space` can never be read: drop them (with a warning) so the
    model holds only the space's layers, however many junk keys the file had."""
    keys = {s.key for s in space.all_layers()} | {s.key for s in space.all_join_layers()}
    foreign = [k for k in table.entries if k not in keys]
    if foreign:
        log.warning("latency table %s: ignoring %d entries that are no layer of %s (e.g. %.80r)",
                    table.source, len(foreign), space.describe(), foreign[0])
        for k in foreign:
            del table.entries[k]


class LatencyModel(Protocol):
    name: str

    def predict(self, arch: Arch) -> float: ...


class LUTModel:
    """Lookup-table latency model for one space on one target."""

    def __init__(self, space: SearchSpace, table: LatencyTable, name: str | None = None,
                 correct: bool = True) -> None:
        from latency.correction import table_correction
        table.check_space(space.name, space.options())
        _drop_foreign_entries(space, table)
        self.space, self.table = space, table
        self.name = name or str(table.metadata.get("device", table.source))
        self.overhead = float(table.metadata.get("call_overhead_ms", 0.0))
        self.correction = table_correction(table.metadata, table.source) if correct else None
        self._base = self.overhead + (self.correction.intercept_ms if self.correction else 0.0)
        self._matrix: np.ndarray | None = None
        self._const = 0.0
        #: a table fitted on the effective graph (latency.calibrate, graph "live") prices live ops only
        self._layers = layer_list(space, table.metadata)
        sep = space.separable_layers() if table.metadata.get("graph") not in ("live", "exported") else None
        if sep is not None and table.metadata.get("joins"):
            joins = space.separable_join_layers()
            sep = None if joins is None else (sep[0] + joins[0], [[a + b for a, b in zip(ca, cb)]
                                                                  for ca, cb in zip(sep[1], joins[1])])
        if sep is not None:
            fixed, per = sep
            width = max(len(c) for c in per) if per else 0
            mat = np.full((len(per), width), np.inf)
            for i, choices in enumerate(per):
                for j, specs in enumerate(choices):
                    mat[i, j] = sum(self._value(s) for s in specs)
            self._matrix = mat
            self._const = self._base + sum(self._value(s) for s in fixed)

    def _value(self, spec: LayerSpec) -> float:
        ms = self.table.ms(spec.key)
        return ms + self.correction.layer_delta(spec, ms) if self.correction else ms

    @property
    def separable(self) -> bool:
        return self._matrix is not None

    def predict(self, arch: Arch) -> float:
        return self._base + sum(self._value(s) for s in self._layers(arch))

    def breakdown(self, arch: Arch) -> list[tuple[str, float]]:
        return [(s.key, self.table.ms(s.key)) for s in self._layers(arch)]

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        """Latency of a batch of encoded archs (N x decisions choice indices), vectorised."""
        if self._matrix is None:
            return np.array([self.predict(self.space.decode(c)) for c in codes])
        codes = np.asarray(codes)
        return self._const + self._matrix[np.arange(codes.shape[1]), codes].sum(axis=1)

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        if self._matrix is None:
            return np.array([self.predict(a) for a in archs])
        return self.predict_codes(np.stack([self.space.encode(a) for a in archs]))

    def min_ms(self, samples: int = 2000, seed: int = 0) -> float:
        """The lowest latency any arch reaches: exact for separable spaces, else the lowest over random
        samples and the space's presets (an upper bound of the true minimum)."""
        if self._matrix is not None:
            return float(self._const + np.where(np.isfinite(self._matrix), self._matrix, np.inf).min(axis=1).sum())
        rng = np.random.default_rng(seed)
        archs = [self.space.sample(rng) for _ in range(samples)]
        for text in self.space.presets.values():  # presets often hold the extremes of a space
            try:
                archs.append(self.space.parse(text))
            except ArchError:
                continue
        return float(min(self.predict(a) for a in archs))
