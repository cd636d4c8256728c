"""Measured whole-net latency: the third kind of LatencyModel (exact lookup per arch).

Benchmarks such as NAS-Bench-201 publish the latency of every arch of a space on real devices.
`MeasuredTable` holds such a column (block string -> ms) with its metadata; `MeasuredModel` has the
interface of `latency.model.LUTModel` (predict, predict_many, predict_codes, min_ms, separable,
breakdown) and answers by lookup, never by interpolation: an arch without a measurement raises
`MissingEntryError`. Shipped targets: the 27 devices of `search_spaces/data/nb201/latency_ms.csv.gz`
for the `nb201` space (`--target pixel3`, `--target raspi4`, ...). Users can also give a file:

    {"format": "nas-measured-table/1", "space": "nb201", "space_options": {...},
     "metadata": {"device": ..., "units": "ms", "batch": 1, "source": ...},
     "archs": {"<block string>": <ms>, ...}}
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import ArchError, LatencyError, MissingEntryError
from nas.core.space import SearchSpace

FORMAT = "nas-measured-table/1"
#: the space whose archs the shipped measurements cover, with the options of the benchmark's nets
BENCH_SPACE = "nb201"
BENCH_OPTIONS: dict[str, Any] = {"channels": 16, "cells": 5, "num_classes": 10, "resolution": 32}


class MissingArchError(MissingEntryError):
    """An arch that a measured table does not hold (the lookup never guesses)."""

    def __init__(self, block: str, table: str, size: int) -> None:
        self.key = block
        LatencyError.__init__(self, f"measured latency table {table} has no measurement for arch {block!r} "
                                    f"(it holds {size} archs)")


@dataclass
class MeasuredTable:
    space: str
    space_options: dict[str, Any]
    metadata: dict[str, Any]
    archs: dict[str, float] = field(default_factory=dict)
    source: str = "<memory>"

    def ms(self, block: str) -> float:
        try:
            return self.archs[block]
        except KeyError:
            raise MissingArchError(block, self.source, len(self.archs)) from None

    @property
    def entries(self) -> dict[str, dict[str, float]]:
        """The measurements in LatencyTable's entry shape (block string -> {"ms": ...})."""
        return {block: {"ms": ms} for block, ms in self.archs.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "space": self.space, "space_options": self.space_options,
                "metadata": self.metadata, "archs": self.archs}

    def save(self, path: str | Path) -> Path:
        from nas.core.files import atomic_write_text
        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")
        self.source = str(path)
        return Path(path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<memory>") -> "MeasuredTable":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LatencyError(f"measured latency table {source} has format {got!r}; expected {FORMAT!r}")
        for name, kind in (("space", str), ("space_options", dict), ("metadata", dict), ("archs", dict)):
            if not isinstance(data.get(name), kind):
                raise LatencyError(f"measured latency table {source}: field {name!r} missing or not a {kind.__name__}")
        archs: dict[str, float] = {}
        for block, ms in data["archs"].items():
            if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not math.isfinite(ms) or ms <= 0:
                raise LatencyError(f"measured latency table {source}: arch {block!r} has latency {ms!r}; "
                                   f"expected a positive number of ms")
            archs[block] = float(ms)
        return cls(data["space"], data["space_options"], data["metadata"], archs, source)

    @classmethod
    def load(cls, path: str | Path) -> "MeasuredTable":
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise LatencyError(f"cannot read measured latency table {path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise LatencyError(f"measured latency table {path} is corrupt: not valid JSON ({exc.msg}, "
                               f"line {exc.lineno})") from None
        return cls.from_dict(data, source=str(path))

    def check_space(self, space_name: str, options: dict[str, Any]) -> None:
        if self.space != space_name:
            raise LatencyError(f"measured latency table {self.source} is for space {self.space!r}, not {space_name!r}")
        from latency.table import _norm  # ignores options that do not change the nets (a candidate list)
        if _norm(self.space_options) != _norm(options):
            raise LatencyError(f"measured latency table {self.source} was measured on {self.space} nets with options "
                               f"{json.dumps(self.space_options, sort_keys=True)}, not "
                               f"{json.dumps(options, sort_keys=True)}")


def is_measured_file(path: str | Path) -> bool:
    """True when `path` is a JSON file in the measured-table format (cheap check of the start)."""
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'"{FORMAT}"' in head


def measured_targets() -> dict[str, list[str]]:
    """Shipped measured targets -> the spaces they have tables for."""
    from latency.bench_devices import DEVICES
    return {name: [BENCH_SPACE] for name in DEVICES}


def shipped_metadata(device_name: str) -> dict[str, Any]:
    """The metadata of a NAS-Bench-201 device's measured table, without reading its 15,625 latencies
    (`nas list targets` shows it); `shipped_table` adds the number of archs."""
    from latency.bench_devices import device
    dev = device(device_name)
    return {"device": dev.description, "source": f"measured ({dev.source})", "units": dev.units,
            "batch": dev.batch, "kind": dev.kind, "runtime": "as published", "statistic": "as published",
            "whole_net": True, "data": "search_spaces/data/nb201/latency_ms.csv.gz"}


def shipped_table(device_name: str) -> MeasuredTable:
    """The measured table of one NAS-Bench-201 device (all 15,625 archs)."""
    from latency.bench_devices import NB201_LATENCY, device, nb201_latency
    dev = device(device_name)
    data = nb201_latency()
    if device_name not in data.ms:
        raise LatencyError(f"benchmark data {NB201_LATENCY} has no column for device {device_name!r}")
    meta = {**shipped_metadata(device_name), "archs": len(data.ms[device_name])}
    return MeasuredTable(BENCH_SPACE, dict(BENCH_OPTIONS), meta, data.ms[device_name], f"{device_name} ({dev.source})")


class MeasuredModel:
    """Exact per-arch latency from a measured whole-net table (same interface as LUTModel)."""

    separable = False

    def __init__(self, space: SearchSpace, table: MeasuredTable, name: str | None = None) -> None:
        table.check_space(space.name, space.options())
        self.space, self.table = space, table
        self.name = name or str(table.metadata.get("device", table.source))
        self.overhead = 0.0

    def predict(self, arch: Arch) -> float:
        return self.table.ms(self.space.format(arch))

    def breakdown(self, arch: Arch) -> list[tuple[str, float]]:
        """One entry: a whole-net measurement has no per-layer parts."""
        return [(f"whole net (measured): {self.space.format(arch)}", self.predict(arch))]

    def predict_many(self, archs: Sequence[Arch]) -> np.ndarray:
        return np.array([self.predict(a) for a in archs])

    def predict_codes(self, codes: np.ndarray) -> np.ndarray:
        return np.array([self.predict(self.space.decode(c)) for c in np.asarray(codes)])

    def min_ms(self, samples: int = 0, seed: int = 0) -> float:
        """The lowest measured latency of any valid arch of the space (exact over the table)."""
        best = math.inf
        for block, ms in self.table.archs.items():
            if ms < best:
                try:
                    self.space.parse(block)
                except ArchError:
                    continue
                best = ms
        if not math.isfinite(best):
            raise LatencyError(f"measured latency table {self.table.source} holds no valid {self.space.name} arch")
        return best
