"""Profile a device that cannot run this package: export layers as ONNX, time them there, import.

    nas latency bundle --space mbconv --out bundle/       # here: layers/*.onnx + manifest.json + script
    python profile_onnx.py bundle/                        # on the device: only onnxruntime + numpy
    nas latency import bundle/ --out table.json           # here: results.jsonl -> LatencyTable

The manifest lists every distinct layer of the space (key, file, input shape with batch, op, MACs)
plus an empty-call graph under `OVERHEAD_KEY`, whose time is subtracted from every entry as in
`latency.profile`. A bundle id (hash of space, options, keys and batch) ties results to their
bundle: results of another bundle are refused on import.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from latency.profile import ProfileSettings
from latency.table import LatencyTable
from nas.core import __version__
from nas.core.files import atomic_write_text
from nas.core.errors import LatencyError
from nas.core.space import SearchSpace

log = logging.getLogger(__name__)

#: (space name, space options) -> the space as defined now
SpaceLookup = Callable[[str, Mapping[str, Any]], SearchSpace]
BUNDLE_FORMAT = "nas-latency-bundle/1"
RESULTS_FORMAT = "nas-latency-results/1"
OVERHEAD_KEY = "__call_overhead__"
SCRIPT = Path(__file__).parent / "standalone" / "profile_onnx.py"
#: session fields that must agree across all runs merged into one table
SAME = ("bundle_id", "provider", "threads", "opt_level", "warmup", "repeats", "rounds", "onnxruntime", "cpu")


def _file_for(key: str, batch: int) -> str:
    return f"layers/{hashlib.sha1(f'{key}|b{batch}'.encode()).hexdigest()[:16]}.onnx"


def _bundle_id(space: SearchSpace, keys: list[str], batch: int) -> str:
    blob = json.dumps([space.name, space.options(), sorted(keys), batch], sort_keys=True, default=list)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def export_bundle(space: SearchSpace, out: str | Path, settings: ProfileSettings | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Write every distinct layer of `space` as ONNX under `out` (resumable) plus the manifest."""
    import onnx
    import onnxruntime as ort
    import torch
    from tqdm import tqdm

    from latency.onnx_io import OPSET, export_onnx
    from nas.core.ops import build_layer, layer_macs
    out = Path(out)
    settings = settings or ProfileSettings()
    specs = space.all_layers()
    bid = _bundle_id(space, [s.key for s in specs], settings.batch)
    old = out / "manifest.json"
    if old.exists():
        prev = load_manifest(out)
        if prev.get("bundle_id") != bid:
            raise LatencyError(f"{out} already holds a bundle of {prev.get('space')} {prev.get('space_options')} "
                               f"(batch {prev.get('settings', {}).get('batch')}); use an empty folder for "
                               f"{space.name} {space.options()} batch {settings.batch}")
    b = settings.batch
    layers: list[dict[str, Any]] = [{"key": OVERHEAD_KEY, "file": _file_for(OVERHEAD_KEY, b), "op": "overhead",
                                     "input_shape": [b, 8, 1, 1], "output_shape": [b, 8, 1, 1], "macs": 0}]
    layers += [{"key": s.key, "file": _file_for(s.key, b), "op": s.op, "input_shape": [b, *s.input_shape],
                "output_shape": [b, *s.output_shape], "macs": int(layer_macs(s))} for s in specs]
    by_key = {s.key: s for s in specs}

    def module(key: str) -> Any:
        return torch.nn.AvgPool2d(1) if key == OVERHEAD_KEY else build_layer(by_key[key])
    for lay in tqdm(layers, desc="exporting layers", unit="layer", disable=not progress):
        path = out / lay["file"]
        if not path.exists():   # export_onnx writes atomically, so an existing file is complete
            export_onnx(module(lay["key"]), torch.randn(*lay["input_shape"]), path)
    shutil.copyfile(SCRIPT, out / SCRIPT.name)
    manifest = {"format": BUNDLE_FORMAT, "bundle_id": bid, "space": space.name, "space_options": space.options(),
                "settings": asdict(settings), "dtype": "float32", "opset": OPSET, "overhead_key": OVERHEAD_KEY,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "exported_with": {"nas": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                                  "onnxruntime": ort.__version__},
                "run": f"python {SCRIPT.name} . [--provider P --threads N --rounds 5 --timeout-s 60]",
                "layers": layers}
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_manifest(bundle: str | Path) -> dict[str, Any]:
    path = Path(bundle) / "manifest.json"
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise LatencyError(f"cannot read {path}: {exc.strerror} (is {bundle} a bundle folder?)") from None
    except json.JSONDecodeError as exc:
        raise LatencyError(f"{path} is corrupt: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT or not isinstance(data.get("layers"), list):
        raise LatencyError(f"{path} is not a {BUNDLE_FORMAT} manifest")
    return data


def read_results(path: str | Path, manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, list[float]],
                                                                      dict[str, str]]:
    """(sessions, pooled times per key, last error per key without any ok row). Raises on corrupt
    lines, rows of another bundle, mixed settings, unknown keys and duplicate (key, round) rows."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise LatencyError(f"cannot read results {path}: {exc.strerror} (run profile_onnx.py on the device "
                           f"and copy results.jsonl into the bundle, or pass --results)") from None
    while lines and not lines[-1].strip():   # blank lines at the end (an editor's or a copy's)
        lines.pop()
    keys = {lay["key"] for lay in manifest["layers"]}
    sessions: list[dict[str, Any]] = []
    times: dict[str, list[float]] = {}
    seen: dict[tuple[str, int], int] = {}
    errors: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        where = f"{path} line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LatencyError(f"{where} is corrupt ({exc.msg}): {line[:80]!r}") from None
        kind = row.get("type") if isinstance(row, dict) else None
        if kind == "session":
            if row.get("bundle_id") != manifest["bundle_id"]:
                raise LatencyError(f"{where} was written for bundle {row.get('bundle_id')!r}, but this bundle is "
                                   f"{manifest['bundle_id']!r} ({manifest['space']}): results of another bundle or space")
            if sessions:
                diff = [f"{k}: {sessions[0].get(k)!r} vs {row.get(k)!r}" for k in SAME if row.get(k) != sessions[0].get(k)]
                if diff:
                    raise LatencyError(f"{where} starts a run with other settings or on another device than line 1 "
                                       f"({'; '.join(diff)}); one table cannot mix them - split the results file")
            sessions.append(row)
            continue
        if kind != "layer":
            raise LatencyError(f"{where} is not a results row (type must be 'session' or 'layer'): {line[:80]!r}")
        if not sessions:
            raise LatencyError(f"{where}: layer row before any session row (truncated or hand-edited file?)")
        key, rnd, status = row.get("key"), row.get("round"), row.get("status")
        if key not in keys:
            raise LatencyError(f"{where}: key {key!r} is not in the bundle's manifest (results of another bundle?)")
        if not isinstance(rnd, int) or isinstance(rnd, bool) or not 0 <= rnd < int(sessions[0].get("rounds", 1)):
            raise LatencyError(f"{where}: round {rnd!r} of {key!r} is not an integer in [0, {sessions[0].get('rounds')})")
        if status == "ok":
            t = row.get("times_ms")
            if not (isinstance(t, list) and t and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      and math.isfinite(v) and v > 0 for v in t)):
                raise LatencyError(f"{where}: times_ms of {key!r} must be a non-empty list of positive finite numbers")
            if (key, rnd) in seen:
                raise LatencyError(f"{where}: duplicate result for {key!r} round {rnd} (first on line "
                                   f"{seen[key, rnd]}); delete one of the two lines")
            seen[key, rnd] = n
            times.setdefault(key, []).extend(float(v) for v in t)
        elif status in ("failed", "timeout"):
            errors[key] = f"{status}: {row.get('error', '')}"
        else:
            raise LatencyError(f"{where}: status {status!r} of {key!r} is not one of ok, failed, timeout")
    if not sessions:
        raise LatencyError(f"results {path} holds no session row; is it a profile_onnx.py results file?")
    return sessions, times, {k: e for k, e in errors.items() if k not in times}


def import_results(bundle: str | Path, results: str | Path | None = None, device: str | None = None,
                   allow_missing: bool = False, space_lookup: SpaceLookup | None = None
                   ) -> tuple[LatencyTable, dict[str, Any]]:
    """Turn a bundle's manifest + results into a LatencyTable with full metadata; and a report
    (missing keys, failed keys with their errors, keys with fewer rounds than asked, warnings).
    `space_lookup(name, options)` (e.g. `search_spaces.catalog.get_space`) lets the import warn when
    the space's definition no longer has the bundle's layers."""
    bundle = Path(bundle)
    manifest = load_manifest(bundle)
    sessions, times, errors = read_results(Path(results) if results else bundle / "results.jsonl", manifest)
    s0 = sessions[0]
    keys = [lay["key"] for lay in manifest["layers"]]
    missing = [k for k in keys if k not in times]
    report: dict[str, Any] = {"layers": len(keys), "measured": len(times), "missing": missing,
                              "failed": {k: errors[k] for k in missing if k in errors}, "warnings": []}
    if missing and not allow_missing:
        shown = "; ".join(f"{k} ({errors.get(k, 'not measured yet')})" for k in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise LatencyError(f"{len(missing)} of {len(keys)} layers have no result: {shown}{more}. Run "
                           f"profile_onnx.py again to finish (add --retry-failed for failed ones), or import "
                           f"with --allow-missing to write a partial table")
    rounds = int(s0.get("rounds", 1))
    per_round = max(1, math.ceil(int(s0["repeats"]) / rounds))
    report["short"] = sorted(k for k, t in times.items() if len(t) < rounds * per_round)
    overhead = float(np.median(times[OVERHEAD_KEY])) if OVERHEAD_KEY in times else 0.0
    if OVERHEAD_KEY not in times:
        report["warnings"].append("no empty-call measurement: per-call overhead not subtracted (0 assumed)")
    settings = manifest["settings"]
    meta = {"device": device or s0.get("hostname"), "cpu": s0.get("cpu"), "machine": s0.get("machine"),
            "os": s0.get("platform"), "runtime": "onnxruntime", "runtime_version": s0.get("onnxruntime"),
            "provider": s0["provider"], "threads": s0["threads"], "opt_level": s0["opt_level"],
            "batch": settings["batch"], "warmup": s0["warmup"], "repeats": s0["repeats"], "rounds": rounds,
            "statistic": "median", "spread": "iqr", "date": max(s["started"] for s in sessions),
            "first_started": min(s["started"] for s in sessions), "sessions": len(sessions),
            "source": "bundle", "bundle_id": manifest["bundle_id"], "bundle_created": manifest.get("created"),
            "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "call_overhead_ms": overhead}
    if missing:
        meta["missing"] = missing
    if report["failed"]:
        meta["failed"] = report["failed"]
    table = LatencyTable(manifest["space"], manifest["space_options"], meta)
    for key, t in times.items():
        if key == OVERHEAD_KEY:
            continue
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        table.add(key, max(0.0, float(med) - overhead), raw_ms=float(med), iqr_ms=float(q3 - q1), n=len(t))
    if space_lookup is not None:
        report["warnings"] += _space_warnings(manifest, keys, space_lookup)
    for w in report["warnings"]:
        log.warning(w)
    return table, report


def _space_warnings(manifest: dict[str, Any], keys: list[str], space_lookup: SpaceLookup) -> list[str]:
    """Warn when today's space definition no longer has the bundle's layers (code changed since)."""
    try:
        space = space_lookup(manifest["space"], manifest["space_options"])
    except Exception as exc:  # noqa: BLE001 - unknown space here: the table may still be used elsewhere
        return [f"cannot check the layers against space {manifest['space']!r} here: {exc}"]
    now = {s.key for s in space.all_layers()}
    gone = [k for k in keys if k != OVERHEAD_KEY and k not in now]
    new = sorted(now - set(keys))
    out = []
    if gone or new:
        out.append(f"the bundle's layers differ from space {space.name} as defined now ({len(gone)} keys no longer "
                   f"used, {len(new)} new keys, e.g. {(new or gone)[0]!r}); re-bundle to cover the current space")
    return out
