"""Export a found arch: JSON spec, PyTorch (module state + spec), ONNX (checked, equal to torch).

Weights are freshly initialised from `seed` unless a state dict is given (e.g. inherited from a
supernet); the ONNX file is verified with `onnx.checker` and its onnxruntime output is compared
with torch on a seeded input before the file is kept.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace

log = logging.getLogger(__name__)
FORMATS = ("onnx", "torch", "json")


def load_result(path: str | Path) -> tuple[SearchSpace, Arch, dict[str, Any]]:
    """Read a `best.json` (or any file with space, space_options and arch) into a space and an arch."""
    from search_spaces.catalog import get_space
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("space"), str) or not data.get("arch"):
        raise UsageError(f"{path} has no 'space' and 'arch' fields; expected a best.json written by 'nas search'")
    options = data.get("space_options", {})
    if not isinstance(options, dict):
        raise UsageError(f"{path}: 'space_options' must be a JSON object of space options, got "
                         f"{json.dumps(options)[:60]}")
    space = get_space(data["space"], **options)
    arch = space.arch_from_json(json.dumps(data["arch_json"])) if "arch_json" in data else space.parse(data["arch"])
    return space, arch, data


def build_model(space: SearchSpace, arch: Arch, seed: int = 0, state: dict[str, Any] | None = None) -> Any:
    import torch
    torch.manual_seed(seed)
    model = space.build(arch)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def export_torch(space: SearchSpace, arch: Arch, out: str | Path, seed: int = 0,
                 state: dict[str, Any] | None = None) -> Path:
    """Save {space, space_options, arch (JSON + block string), state_dict}; reload with `load_torch`."""
    import os
    import tempfile

    import torch
    model = build_model(space, arch, seed, state)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".pt")
    os.close(fd)
    try:
        torch.save({"space": space.name, "space_options": space.options(), "arch": arch.to_dict(),
                    "block_string": space.format(arch), "state_dict": model.state_dict()}, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load_torch(path: str | Path) -> tuple[SearchSpace, Arch, Any]:
    import torch

    from search_spaces.catalog import get_space
    blob = torch.load(path, map_location="cpu", weights_only=True)
    space = get_space(blob["space"], **blob["space_options"])
    arch = space.validate(Arch.from_dict(blob["arch"]))
    return space, arch, build_model(space, arch, state=blob["state_dict"])


def export_onnx(space: SearchSpace, arch: Arch, out: str | Path, seed: int = 0, batch: int = 1,
                state: dict[str, Any] | None = None, atol: float = 1e-4) -> tuple[Path, float]:
    """Export, check and compare with torch; returns (path, max abs difference)."""
    import onnx
    import torch

    from latency import onnx_io
    model = build_model(space, arch, seed, state)
    x = torch.randn(batch, *space.input_shape, generator=torch.Generator().manual_seed(seed))
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.onnx")
    try:
        onnx_io.export_onnx(model, x, tmp)
        onnx.checker.check_model(str(tmp), full_check=True)
        with torch.no_grad():
            ref = model(x).numpy()
        got = onnx_io.run(onnx_io.session(tmp), x.numpy())
        diff = float(np.max(np.abs(ref - got)))
        scale = float(np.max(np.abs(ref))) or 1.0
        if diff > atol * max(1.0, scale):
            raise NasError(f"ONNX export of {space.format(arch)!r} differs from torch by {diff:.3g} "
                           f"(tolerance {atol * max(1.0, scale):.3g}); file not written")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, diff


def export(result: str | Path, fmt: str, out: str | Path, seed: int = 0) -> dict[str, Any]:
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    space, arch, data = load_result(result)
    info: dict[str, Any] = {"format": fmt, "out": str(out), "arch": space.format(arch)}
    if fmt == "onnx":
        _, diff = export_onnx(space, arch, out, seed)
        info["max_abs_diff_vs_torch"] = diff
    elif fmt == "torch":
        export_torch(space, arch, out, seed)
    else:
        from nas.core.files import atomic_write_text
        atomic_write_text(Path(out), json.dumps({"space": space.name, "space_options": space.options(),
                                                 "arch": space.format(arch), "arch_json": arch.to_dict()},
                                                indent=1) + "\n")
    return info
