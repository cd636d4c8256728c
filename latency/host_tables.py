"""`--target cpu` means this machine: tables measured on this CPU model with this onnxruntime.

The shipped cpu tables were measured on one machine (named target `xeon-2.8ghz`, after its CPU);
using them on another CPU would be silently wrong. `resolve` finds the table for this machine:

1. a table profiled here before, in the per-user cache
   (`$NAS_CACHE_DIR` or the platform cache folder, e.g. ~/.cache/nas/tables/<cpu-slug>_ort-<version>/);
2. a shipped measured table whose metadata names this CPU model and onnxruntime version;
3. otherwise, for spaces that profile in seconds (`AUTO_PROFILE`: mbconv, nasnet - both variants -,
   hytra, nb201, ofa_mbv3, vit_resnas), profile one now (progress bar; layers timed among 6 calibration
   nets, which also fit its net-level correction: latency/net_calibration.py) into the cache, saying first
   what it takes where that is minutes (vit_resnas); a space outside the set is refused with the command
   that makes its table. The file name and the match ignore the options that restrict the search, not
   the nets (`candidates`): a candidate file reuses the space's table.
   `NAS_AUTO_PROFILE=0` refuses for every space (the test suite sets it: it never profiles silently).
A table profiled on a busy machine is checked against a quiet re-timing of a few layers before it is
trusted (re-profiled if off, `pending` while the machine stays busy): latency/host_check.py.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nas.core.errors import UsageError
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    from latency.table import LatencyTable

log = logging.getLogger(__name__)

TARGET = "cpu"
#: this machine with every layer statically quantized to int8 (latency.quantize), cached beside `cpu`
INT8_TARGET = "cpu-int8"
PRECISION_OF = {TARGET: "float32", INT8_TARGET: "int8"}
#: spaces whose full table profiles in seconds: profiled automatically on first use (the shipped Xeon
#: tables took 3.1 s for mbconv, 3.1 s for nasnet, 6.0 s for hytra without calibration nets; with 10 of
#: them, 15 / 40 / 62 s on a quiet 2-core EPYC VM (stop 20); ofa_mbv3 (93 layers + 10 calibration nets)
#: 34 CPU s on the 2.8 GHz Xeon VM under load; earlier, on that VM at load 9,
#: nasnet 15 s, its darts variant 2-4 s, hytra 29 s; vit_resnas took 108 s on the Xeon: refused)
AUTO_PROFILE = frozenset({"mbconv", "nb201", "nasnet", "hytra", "ofa_mbv3", "vit_resnas"})
#: what first-use profiling takes, said before it starts (the measurements of the comment above)
PROFILE_TIME = {"vit_resnas": "about 2 minutes (108 s measured on a 2-core Xeon)"}


def cache_root() -> Path:
    """`$NAS_CACHE_DIR/tables`, else the platform's per-user cache folder + nas/tables."""
    env = os.environ.get("NAS_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "tables"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "nas" / "tables"


def runtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("onnxruntime")
    except PackageNotFoundError:
        return "none"


def host_cpu() -> str:
    from latency.profile import cpu_model
    return cpu_model()


def cpu_slug(cpu: str) -> str:
    """'Intel(R) Xeon(R) Processor @ 2.80GHz' -> 'intel-xeon-2.80ghz'."""
    text = re.sub(r"\((r|tm)\)|\bcpu\b|\bprocessor\b|@", " ", cpu.lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-.") or "unknown-cpu"


def host_dir(precision: str = "float32") -> Path:
    """The cache folder of this machine's tables; int8 tables in a sibling folder ending `_int8`."""
    return cache_root() / (f"{cpu_slug(host_cpu())}_ort-{runtime_version()}" + ("" if precision == "float32" else
                                                                                 f"_{precision}"))


def options_suffix(options: dict[str, Any], plain_options: dict[str, Any] | None) -> str:
    """The table file-name convention for space options, cached and shipped tables alike: `<space>.json`
    holds the options of the space's plain shipped table (its defaults), `<space>-<hash>.json` any
    other options, hash = the first 8 hex digits of the SHA-1 of the options as sorted JSON
    (e.g. `nasnet-3acae496.json`: nasnet with variant=darts). Options that do not change the nets (a
    candidate list, `NET_NEUTRAL_OPTIONS`) are left out: a restricted space uses the space's tables."""
    from nas.core.space import NET_NEUTRAL_OPTIONS
    options = {k: v for k, v in options.items() if k not in NET_NEUTRAL_OPTIONS}
    opts = json.dumps(options, sort_keys=True, default=list)
    if plain_options is not None and json.dumps(plain_options, sort_keys=True, default=list) == opts:
        return ""
    return "-" + hashlib.sha1(opts.encode()).hexdigest()[:8]


def net_options(space: SearchSpace) -> dict[str, Any]:
    """The options that make the nets (not `candidates`, which only restricts the search)."""
    from nas.core.space import NET_NEUTRAL_OPTIONS
    return {k: v for k, v in space.options().items() if k not in NET_NEUTRAL_OPTIONS}


def host_table_path(space: SearchSpace, shipped_options: dict[str, Any] | None = None,
                    precision: str = "float32") -> Path:
    return host_dir(precision) / f"{space.name}{options_suffix(net_options(space), shipped_options)}.json"


def cached_spaces(precision: str = "float32") -> list[str]:
    d = host_dir(precision)
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def matches_host(metadata: dict[str, Any], precision: str = "float32") -> bool:
    """Was this table measured on this CPU model with this onnxruntime version, at `precision`?"""
    return (metadata.get("source") == "measured" and metadata.get("cpu") == host_cpu()
            and str(metadata.get("runtime_version")) == runtime_version()
            and metadata.get("precision", "float32") == precision)


def profile_command(space: SearchSpace, path: Path, precision: str = "float32") -> str:
    opts = "".join(f" -o {k}={json.dumps(v)}" for k, v in net_options(space).items()) if path.stem != space.name else ""
    prec = "" if precision == "float32" else f" --precision {precision}"
    return f"nas latency profile --space {space.name}{opts}{prec} --out {path}"


def resolve(space: SearchSpace, shipped: list["LatencyTable"], progress: bool = True,
            profile: Callable[[SearchSpace, Path, bool], "LatencyTable"] | None = None,
            precision: str = "float32") -> "LatencyTable":
    """The cpu table of `space` for this machine at `precision` (float32: `cpu`, int8: `cpu-int8`):
    cached, shipped for this CPU, profiled now, or refused.

    `shipped`: the shipped measured tables of the space (any target); `profile` (tests) replaces
    the onnxruntime profiling."""
    from latency.table import LatencyTable
    # the file name is relative to the options of the space's plain `<space>.json` shipped table
    options = next((t.space_options for t in shipped if Path(t.source).stem == space.name), None)
    path = host_table_path(space, options, precision)
    from latency.host_check import recheck, settle

    def redo() -> "LatencyTable":   # float keeps the three-argument call (tests replace `_profile` with such functions)
        if profile is not None:
            return profile(space, path, progress)
        return _profile(space, path, progress) if precision == "float32" else _profile(space, path, progress, precision)
    if path.exists():   # profiled on a busy machine and not yet checked on a quiet one: checked now
        cached = LatencyTable.load(path)
        why = stale_int8(cached, space) if precision == "int8" else None
        if why is None:
            return recheck(cached, space, path, redo)
        log.warning("the cached int8 table %s was made by an older int8 model (%s): profiling it again", path, why)
        return settle(redo(), space, path, redo)
    for table in shipped:
        if matches_host(table.metadata, precision) and json.dumps(table.space_options, sort_keys=True, default=list) == \
                json.dumps(net_options(space), sort_keys=True, default=list):
            return table
    cpu, ort = host_cpu(), runtime_version()
    if space.name not in AUTO_PROFILE or os.environ.get("NAS_AUTO_PROFILE", "1").lower() in ("0", "false", "no"):
        raise UsageError(f"no {precision} cpu latency table of space {space.name!r} for this machine ({cpu}, "
                         f"onnxruntime {ort}); make it with: {profile_command(space, path, precision)}")
    log.warning("no %s cpu latency table of %s for this machine (%s, onnxruntime %s): profiling one into %s%s",
                precision, space.name, cpu, ort, path,
                f"; it takes {PROFILE_TIME[space.name]}" if space.name in PROFILE_TIME else "")
    return settle(redo(), space, path, redo)   # profiled on a busy machine: checked against a quiet re-timing


def stale_int8(table: "LatencyTable", space: SearchSpace) -> str | None:
    """Why a cached int8 table predates the current int8 layer model, or None. Tables made before
    join layers (node sums, zero edges) and latent ops (pools quantized as inside a net) under-price
    nb201-style nets 2-3x; tables made before in-net layer graphs (`latency.int8_context`: quantization
    metadata `boundaries`) over-price convs against pools; nothing else in their name or metadata would tell."""
    quant = table.metadata.get("quantization")
    if not isinstance(quant, dict) or "latent_ops" not in quant:
        return "layers timed without the quantized pools a whole net runs"
    if space.all_join_layers() and not table.metadata.get("joins"):
        return "no node-sum / zero-edge layers"
    if "boundaries" not in quant or table.metadata.get("graph") != "exported":
        return "layers timed with their own quantize / dequantize / layout changes, which a net does not run"
    return None


def _profile(space: SearchSpace, path: Path, progress: bool, precision: str = "float32") -> "LatencyTable":
    from latency.net_calibration import profile_calibrated
    from latency.profile import ProfileSettings
    from latency.quantize import Quantizer, digits_calibration
    # int8: calibrated on the bundled digits; ops without an int8 kernel run in float (recorded per layer)
    quant = Quantizer(digits_calibration(space.input_shape[-1])) if precision == "int8" else None
    # layers timed among 6 calibration nets, which also fit the net-level correction (10 in `nas latency profile`)
    table = profile_calibrated(space, None, ProfileSettings(precision=precision), progress=progress, clock="auto",
                               nets=6, quant=quant)
    table.save(path)   # atomic: a concurrent run sees either no table or a whole one
    return table
