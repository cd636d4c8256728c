"""Latency targets: shipped tables `latency/tables/<target>/<space>.json` (readable offline), and `cpu`.

`cpu` is this machine (latency.host_tables): a table measured on this CPU model with this
onnxruntime, from the per-user cache, a matching shipped table, or profiled on first use. The
shipped cpu tables are the named target of the CPU they were measured on (`xeon-2.8ghz`, `amd-epyc`).
The measured devices of NAS-Bench-201 (`pixel3`, `raspi4`, ...: latency/measured.py) are whole-net
targets of the `nb201` space: an exact lookup per arch instead of a sum of layers.
A target may also be given as a path to a table file (one the user profiled on their device).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from latency import host_tables
from latency.measured import MeasuredModel, MeasuredTable, is_measured_file, measured_targets, shipped_table
from latency.model import LUTModel
from latency.table import LatencyTable
from nas.core.errors import LatencyError, UnknownNameError, UsageError
from nas.core.space import SearchSpace

TABLES = Path(__file__).parent / "tables"
HOST = host_tables.TARGET
#: this machine's targets -> precision (`cpu`: float32, `cpu-int8`: int8 graphs)
HOSTS = host_tables.PRECISION_OF


def shipped_names() -> list[str]:
    return sorted(p.name for p in TABLES.iterdir() if p.is_dir() and any(p.glob("*.json")))


def model_targets() -> dict[str, Any]:
    """The device-model targets (latency/devices/pixel1.py TARGETS: `pixel1`, `pixel1-2019`): they
    price any layer, so they build a table for any options of a space."""
    from latency.devices.pixel1 import TARGETS as PIXEL1_TARGETS
    return dict(PIXEL1_TARGETS)


def target_names() -> list[str]:
    return sorted({*shipped_names(), *HOSTS, *measured_targets(), *model_targets()})


def target_spaces(target: str) -> list[str]:
    if target in model_targets():
        target = "pixel1"   # every pixel1 target lists the spaces of the shipped (level-0) tables
    if target in HOSTS:
        return host_tables.cached_spaces(HOSTS[target])
    if target in measured_targets() and not (TABLES / target).is_dir():
        return measured_targets()[target]
    return sorted(p.stem for p in (TABLES / target).glob("*.json"))


def table_path(target: str, space: str) -> Path:
    """Path of the shipped (or, for cpu, cached) table of `target` for `space`, or the user's table file."""
    if target.endswith(".json") or Path(target).is_file():
        path = Path(target)
        if not path.exists():
            raise UsageError(f"latency table file {target!r} does not exist")
        return path
    if target not in target_names():
        raise UnknownNameError("target", target, target_names())
    if target in HOSTS:
        path = host_tables.host_dir(HOSTS[target]) / f"{space}.json"
        prec = "" if HOSTS[target] == "float32" else f" --precision {HOSTS[target]}"
        if not path.exists():
            raise UsageError(f"no {target} latency table{' of space ' + repr(space) if space else 's'} for this machine "
                             f"({host_tables.host_cpu()}) yet; make it with: nas latency profile --space "
                             f"{space or 'SPACE'}{prec} --out {path} (a search or predict on --target {target} does "
                             f"it for mbconv)")
        return path
    path = TABLES / target / f"{space}.json"
    if not path.exists() or target in measured_targets():
        raise UsageError(f"target {target!r} has no table for space {space!r}; it has tables for: "
                         f"{', '.join(target_spaces(target))} (profile one with 'nas latency profile --space {space}')")
    return path


def _space_files(target: str, space: str) -> list[Path]:
    """The shipped table files of `space` on `target`: `<space>.json` and `<space>-<hash>.json` (other
    options, `host_tables.options_suffix`)."""
    return sorted(p for p in (TABLES / target).glob(f"{space}*.json")
                  if p.stem == space or re.fullmatch(re.escape(space) + r"-[0-9a-f]{8}", p.stem))


def plain_options(space: str) -> dict[str, Any] | None:
    """The options of the space's plain shipped tables (`<space>.json`: the space's defaults), or None."""
    for target in shipped_names():
        path = TABLES / target / f"{space}.json"
        if path.exists():
            return LatencyTable.load(path).space_options
    return None


def shipped_path(target: str, space: SearchSpace) -> Path:
    """Where the shipped table of `target` for `space` with its options is: `<space>.json` for the
    default options, `<space>-<hash>.json` for others (the convention of the cpu cache too)."""
    return TABLES / target / f"{space.name}{host_tables.options_suffix(space.options(), plain_options(space.name))}.json"


def shipped_measured(space: str) -> list[LatencyTable]:
    """The shipped tables of `space` that were measured (not modelled), any target and options."""
    tables = [LatencyTable.load(p) for t in shipped_names() for p in _space_files(t, space)]
    return [t for t in tables if t.metadata.get("source") == "measured"]


def load_table(target: str, space: str | SearchSpace, progress: bool = True) -> LatencyTable | MeasuredTable:
    """The table of `target` for `space` (a per-layer table, or a measured whole-net table for measured
    targets and files); with a SearchSpace, `cpu` may profile this machine's table."""
    if target in HOSTS:
        if isinstance(space, SearchSpace):
            return host_tables.resolve(space, shipped_measured(space.name), progress, precision=HOSTS[target])
        for table in shipped_measured(space):   # by file name: `nasnet` or `nasnet-3acae496`
            if Path(table.source).stem == space and host_tables.matches_host(table.metadata, HOSTS[target]):
                return table
    name = space.name if isinstance(space, SearchSpace) else space
    if target in model_targets():
        return _model_table(target, space)
    if target in measured_targets() and name in measured_targets()[target]:
        return shipped_table(target)
    if isinstance(space, SearchSpace) and target in shipped_names() and shipped_path(target, space).exists():
        path = shipped_path(target, space)   # the table made for these options (else: an options error below)
    else:
        path = table_path(target, name)
    return MeasuredTable.load(path) if is_measured_file(path) else LatencyTable.load(path)


def _model_table(target: str, space: str | SearchSpace) -> LatencyTable:
    """A pixel1 target's table: the shipped level-0 table where one was made for these options (it
    records the model's checks), else built now for the options given; scaled to the target's session."""
    from latency.devices.pixel1 import at_session, build_table
    if isinstance(space, SearchSpace):
        path = shipped_path("pixel1", space)
        if not path.exists():
            return build_table(space, target=target)
    else:
        path = table_path("pixel1", space)
    table = LatencyTable.load(path)
    return table if target == "pixel1" else at_session(table, target)


def lut_model(target: str, space: SearchSpace, progress: bool = True) -> LUTModel | MeasuredModel:
    """The latency model of `target` for `space`: a LUT, or an exact lookup for measured tables. A
    table made for other options of the space is an error naming the command that makes the right one."""
    table = load_table(target, space, progress)
    if isinstance(table, MeasuredTable):
        return MeasuredModel(space, table, name=target)
    try:
        return LUTModel(space, table, name=target)
    except LatencyError as exc:
        if table.space != space.name:
            raise
        if isinstance(table.metadata.get("layer_model"), dict):   # a calibrated device model: any options
            from latency.calibrate_select import priced_table
            return LUTModel(space, priced_table(space, table.metadata), name=target)
        options = space.options()
        changed = [k for k, v in options.items() if table.space_options.get(k) != v]
        diff = "; ".join(f"{k}: {table.space_options.get(k)} there, {options[k]} here" for k in changed)
        given = " ".join(f"-o {k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
                         for k, v in options.items() if k in changed)
        raise LatencyError(f"latency table {table.source} was made for other {space.name} options ({diff or exc}); "
                           f"make one for these with 'nas latency profile --space {space.name} {given} "
                           f"--out TABLE.json' and pass --target TABLE.json") from None
