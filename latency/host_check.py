"""A host table profiled under contention is checked against a quiet re-timing before it is trusted.

`nas latency profile` and first-use profiling (latency/host_tables.py) record whether the machine
was busy when the table started and ended (`busy_at_start` / `busy_at_end`: fewer free cores than the
threads timed, `latency.contention.Load.busy`). A table profiled on a busy machine can be off by tens
of percent per layer (+21% against one profiled quieter, issue 24), and a cached table is reused for
good. So before such a table is cached for good:

- machine quiet now: `CHECK_LAYERS` of its layers (spread over its range of times) are timed again;
  if their median ratio (table / quiet) is within `TOLERANCE`, the table is kept (`quiet_check`
  status `passed`); otherwise it is profiled again now, on the quiet machine (`reprofiled`), with a
  warning saying by how much the busy table was off;
- machine still busy: the table is used for this run and cached as `pending`, with a warning; the
  next use on a quiet machine checks it (`recheck`), until then it is not trusted silently.

A table profiled quiet (or whose load was not recorded: shipped tables, other OSes) is left alone.
Load readings and re-timings are injectable (`load`, `retime`): the tests use made-up ones, not real load.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from latency.contention import Load, current_load

if TYPE_CHECKING:
    from latency.table import LatencyTable
    from nas.core.layer import LayerSpec
    from nas.core.space import SearchSpace

log = logging.getLogger(__name__)

#: layers re-timed on a quiet machine (their times spread over the table's range)
CHECK_LAYERS = 5
#: largest median |table / quiet - 1| accepted; wider than the 5-15% that layers timed among layers
#: read fast against layers timed among nets (latency/profile.py), narrower than the +21% of contention
TOLERANCE = 0.15

Retime = Callable[[Sequence["LayerSpec"], "LatencyTable"], dict[str, float]]
Redo = Callable[[], "LatencyTable"]


def profiled_busy(table: "LatencyTable") -> bool:
    """Was the machine busy when the table started or ended? (False when not recorded.)"""
    return bool(table.metadata.get("busy_at_start") or table.metadata.get("busy_at_end"))


def check_layers(space: "SearchSpace", table: "LatencyTable", n: int = CHECK_LAYERS) -> list["LayerSpec"]:
    """`n` layers of the table, evenly spread over its sorted times (the fastest to the slowest)."""
    specs = [s for s in {s.key: s for s in space.all_layers()}.values() if s.key in table]
    specs.sort(key=lambda s: table.ms(s.key))
    if len(specs) <= n:
        return specs
    return [specs[int(round(i))] for i in np.linspace(0, len(specs) - 1, n)]


def _retime(specs: Sequence["LayerSpec"], table: "LatencyTable") -> dict[str, float]:
    """Time `specs` now with the table's settings and clock (one group, no context nets); an int8
    table's layers quantized as it was, as their in-net graphs (latency.int8_context)."""
    from latency.int8_context import LayerContext
    from latency.profile import ProfileSettings, profile_layers
    from latency.quantize import quantizer_of
    from latency.table import LatencyTable
    names = ProfileSettings.__dataclass_fields__
    settings = ProfileSettings(**{k: table.metadata[k] for k in names if k in table.metadata})
    quant, placement = None, None
    if settings.precision == "int8":
        from search_spaces.catalog import get_space
        space = get_space(table.space, **table.space_options)
        quant = quantizer_of(table.metadata, None, space.input_shape[-1])
        placement = LayerContext.of(space)
    fresh = LatencyTable(table.space, dict(table.space_options), {"clock": table.metadata.get("clock", "wall")})
    fresh = profile_layers(specs, settings, fresh, None, progress=False, chunk=max(1, len(specs)), quant=quant,
                           placement=placement)
    return {s.key: fresh.ms(s.key) for s in specs}


def compare(table: "LatencyTable", quiet_ms: dict[str, float]) -> float:
    """Median of table / quiet over the re-timed layers (1.0: the busy table agrees)."""
    ratios = [table.ms(k) / v for k, v in quiet_ms.items() if v > 0]
    return float(np.median(ratios)) if ratios else 1.0


def settle(table: "LatencyTable", space: "SearchSpace", path: Path, redo: Redo,
           load: Callable[[], Load | None] | None = None, retime: Retime | None = None) -> "LatencyTable":
    """The table to cache at `path` for a freshly profiled (or a `pending`) `table`: kept, checked,
    re-profiled (`redo`, on a quiet machine) or cached as pending; see the module doc. Saves it."""
    if not profiled_busy(table):
        return table
    threads = int(table.metadata.get("threads", 1) or 1)
    now = (load or (lambda: current_load(threads)))()
    if now is None or now.busy:
        was = table.metadata.get("load_at_end") or table.metadata.get("load_at_start")
        table.metadata["quiet_check"] = {"status": "pending", "load": now.describe() if now else None}
        log.warning("the cpu table of %s was profiled on a busy machine (%s) and the machine is still busy%s: "
                    "using it for now; it is checked against a quiet re-timing on its next use on a quiet "
                    "machine (or delete %s to re-profile)", space.name, was,
                    f" ({now.describe()})" if now else "", path)
        table.save(path)
        return table
    specs = check_layers(space, table)
    quiet = (retime or _retime)(specs, table)
    ratio = compare(table, quiet)
    record = {"layers": len(quiet), "median_ratio": round(ratio, 3), "tolerance": TOLERANCE, "load": now.describe()}
    if abs(ratio - 1.0) <= TOLERANCE:
        table.metadata["quiet_check"] = {"status": "passed", **record}
        table.save(path)
        return table
    log.warning("the cpu table of %s was profiled on a busy machine and its layers read %+.0f%% against a quiet "
                "re-timing of %d of them (tolerance %.0f%%): profiling it again now that the machine is quiet",
                space.name, 100.0 * (ratio - 1.0), len(quiet), 100.0 * TOLERANCE)
    if path.exists():
        path.unlink()   # `redo` profiles from scratch, not a resume of the busy table
    fresh = redo()
    fresh.metadata["quiet_check"] = {"status": "reprofiled", "busy_table": record}
    fresh.save(path)
    return fresh


def recheck(table: "LatencyTable", space: "SearchSpace", path: Path, redo: Redo,
            load: Callable[[], Load | None] | None = None, retime: Retime | None = None) -> "LatencyTable":
    """A cached table whose quiet check is `pending`: `settle` it now (quiet: checked; busy: as is,
    said once per use)."""
    check = table.metadata.get("quiet_check")
    if not (isinstance(check, dict) and check.get("status") == "pending"):
        return table
    return settle(table, space, path, redo, load, retime)
