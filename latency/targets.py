"""Shipped latency targets: `latency/tables/<target>/<space>.json`, readable offline.

A target may also be given as a path to a table file (one the user profiled on their device).
"""
from __future__ import annotations

import json
from pathlib import Path

from latency.model import LUTModel
from latency.table import LatencyTable
from nas.core.errors import LatencyError, UnknownNameError, UsageError
from nas.core.space import SearchSpace

TABLES = Path(__file__).parent / "tables"


def target_names() -> list[str]:
    return sorted(p.name for p in TABLES.iterdir() if p.is_dir() and any(p.glob("*.json")))


def target_spaces(target: str) -> list[str]:
    return sorted(p.stem for p in (TABLES / target).glob("*.json"))


def table_path(target: str, space: str) -> Path:
    """Path of the shipped table of `target` for `space`, or of the user's table file `target`."""
    if target.endswith(".json") or Path(target).is_file():
        path = Path(target)
        if not path.exists():
            raise UsageError(f"latency table file {target!r} does not exist")
        return path
    if target not in target_names():
        raise UnknownNameError("target", target, target_names())
    path = TABLES / target / f"{space}.json"
    if not path.exists():
        raise UsageError(f"target {target!r} has no table for space {space!r}; it has tables for: "
                         f"{', '.join(target_spaces(target))} (profile one with 'nas latency profile --space {space}')")
    return path


def load_table(target: str, space: str) -> LatencyTable:
    return LatencyTable.load(table_path(target, space))


def lut_model(target: str, space: SearchSpace) -> LUTModel:
    """The LUT model of `target` for `space`; a table made for other options of the space is an
    error naming the command that makes the right one."""
    table = load_table(target, space.name)
    try:
        return LUTModel(space, table, name=target)
    except LatencyError as exc:
        if table.space != space.name:
            raise
        options = space.options()
        changed = [k for k, v in options.items() if table.space_options.get(k) != v]
        diff = "; ".join(f"{k}: {table.space_options.get(k)} there, {options[k]} here" for k in changed)
        given = " ".join(f"-o {k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
                         for k, v in options.items() if k in changed)
        raise LatencyError(f"latency table {table.source} was made for other {space.name} options ({diff or exc}); "
                           f"make one for these with 'nas latency profile --space {space.name} {given} "
                           f"--out TABLE.json' and pass --target TABLE.json") from None
