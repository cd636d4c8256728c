"""The files of a `nas train` run in its --out folder: the folder's checks, its lock, the per-epoch
checkpoint (saved atomically, and checked against this run's recipe on --resume) and the final outputs
(model.pt, model.onnx, result.json). nas.training.retrain trains; this module reads and writes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    import torch.nn as nn

CHECKPOINT, MODEL_PT, MODEL_ONNX, RESULT = "checkpoint.pt", "model.pt", "model.onnx", "result.json"


def prepare_out(out: str | Path) -> Path:
    """Create `out` and prove it writable now, before any training: a clear error instead of a lost run."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--out {out} is not writable: {exc.strerror or exc}") from None
    from nas.core.files import clean_stale_temps
    for name in (CHECKPOINT, MODEL_PT, MODEL_ONNX, RESULT):   # temp files of an earlier run killed mid-write
        clean_stale_temps(out / name)
    for name in ("checkpoint.pt", "model.pt", "result.json"):   # files replaced later (after an epoch)
        try:
            if (out / name).is_file():
                (out / name).open("r+b").close()   # an immutable or read-only file refuses this
        except OSError as exc:
            raise UsageError(f"--out {out}: {name} cannot be replaced ({exc.strerror or exc})") from None
    return out


def save_atomic(obj: Any, path: Path) -> None:
    import torch

    from nas.deploy.export import normal_permissions
    from nas.core.files import hidden_temp
    tmp = hidden_temp(path)
    try:
        try:
            torch.save(obj, tmp)
            normal_permissions(tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError) as exc:   # disk full: torch says "unexpected pos ..."
            from nas.core.files import write_failure
            raise write_failure(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path, space: SearchSpace, arch: Arch, cfg: Any, world: int) -> dict[str, Any]:
    import torch
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a foreign or corrupt file: one clear line
        raise UsageError(f"{path} is not a readable nas train checkpoint: {exc}") from None
    mine = {"space": space.name, "space_options": space.options(), "arch": arch.to_dict(),
            "recipe": cfg.recipe(), "world_size": world}
    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    for key, value in mine.items():
        theirs = ck.get(key)
        if same(theirs, value):
            continue
        if isinstance(theirs, dict) and isinstance(value, dict):   # name only the entries that differ
            names = sorted(set(theirs) | set(value), key=str)
            what = ", ".join(f"{k} (checkpoint {theirs.get(k, '<none>')!r}, this run {value.get(k, '<none>')!r})"
                             for k in names if not same(theirs.get(k), value.get(k)))
            text = f"its {key} differs in {what}"
        else:
            text = f"its {key} is {theirs!r}, this run has {value!r}"
        raise UsageError(f"cannot resume from {path}: {text}; use the same settings or another --out")
    return ck


def write_outputs(out: Path, tspace: SearchSpace, arch: Arch, model: "nn.Module", result: Any) -> Any:
    """model.pt, model.onnx (dynamic batch, checked at batch 1 and 8) and result.json, each written atomically."""
    from nas.core.files import atomic_write_text
    from nas.deploy.export import export_onnx, export_torch, normal_permissions
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    export_torch(tspace, arch, out / MODEL_PT, state=state)
    diffs: dict[int, float] = {}
    export_onnx(tspace, arch, out / MODEL_ONNX, batch=None, state=state, diffs=diffs)
    files = {"checkpoint": str(out / CHECKPOINT), "torch": str(out / MODEL_PT), "onnx": str(out / MODEL_ONNX),
             "result": str(out / RESULT)}
    result = dataclasses.replace(result, files=files, onnx_max_abs_diff=diffs)
    data = {"space": tspace.name, "arch": result.arch, "arch_json": arch.to_dict(), **result.to_dict()}
    atomic_write_text(out / RESULT, json.dumps(data, indent=1, default=str) + "\n")
    normal_permissions(out / RESULT)
    return result


@contextlib.contextmanager
def out_lock(out: str | None) -> Iterator[None]:
    """One `nas train` at a time on an --out folder (as a search locks its store): an exclusive flock
    on OUT/checkpoint.pt.lock, dropped by the kernel when the holder dies."""
    if out is None:
        yield
        return
    from nas.store.lock import RunLockedError, run_lock
    try:
        lock = run_lock(f"jsonl:{Path(out) / CHECKPOINT}", None, what=str(out))
        lock.__enter__()
    except RunLockedError as exc:
        raise NasError(str(exc).replace("another search", "another run").split("; wait")[0]
                       + "; wait for it or stop it, or use another --out") from None
    try:
        yield
    except BaseException:
        lock.__exit__(*sys.exc_info())
        raise
    else:
        lock.__exit__(None, None, None)
