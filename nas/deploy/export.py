"""Export a found arch: JSON spec, PyTorch (module state + spec), TorchScript, ONNX (checked, equal to torch).

Weights are freshly initialised from `seed` unless a state dict is given (e.g. trained by `nas train`
or inherited from a supernet); the ONNX file is verified with `onnx.checker` and its onnxruntime
output is compared with torch on seeded inputs (batch 1 and 8 when the batch axis is dynamic, the
default) before the file is kept. Files get normal permissions (0666 minus the umask).

Loading: `nas.deploy.export.load_model("net.pt")` gives the nn.Module (eval mode) of a `--format torch`
file; a `--format torchscript` file loads with plain `torch.jit.load("net.ts")`, without `nas`.
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
FORMATS = ("onnx", "torch", "torchscript", "json")
#: file name used when --out is an existing folder
DEFAULT_NAMES = {"onnx": "model.onnx", "torch": "model.pt", "torchscript": "model.ts", "json": "model.json"}
CHECK_BATCHES = (1, 8)   # batch sizes a dynamic-batch ONNX file is checked at


def normal_permissions(path: str | Path) -> Path:
    """Give `path` the mode a plain open() would (0666 minus the umask); temp files start at 0600."""
    import os
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
    return Path(path)


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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = space.build(arch)
    if state is not None:
        model.load_state_dict(state)
    return model.eval()


def export_torch(space: SearchSpace, arch: Arch, out: str | Path, seed: int = 0,
                 state: dict[str, Any] | None = None) -> Path:
    """Save {space, space_options, arch (JSON + block string), state_dict}; reload with `load_torch`."""
    import os

    import torch
    model = build_model(space, arch, seed, state)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from nas.core.files import hidden_temp
    tmp = hidden_temp(out, ".pt")
    try:
        try:
            torch.save({"space": space.name, "space_options": space.options(), "arch": arch.to_dict(),
                        "block_string": space.format(arch), "state_dict": model.state_dict()}, tmp)
        except (OSError, RuntimeError) as exc:   # disk full: torch says "unexpected pos ..."
            from nas.core.files import write_failure
            raise write_failure(out, exc) from None
        normal_permissions(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load_torch(path: str | Path) -> tuple[SearchSpace, Arch, Any]:
    """(space, arch, module in eval mode) of a file written by `export_torch` / `nas export --format torch`."""
    import pickle

    import torch

    from search_spaces.catalog import get_space
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise UsageError(f"{path} is not a .pt file written by 'nas export --format torch': {exc}") from None
    if not isinstance(blob, dict) or not {"space", "space_options", "arch", "state_dict"} <= set(blob):
        raise UsageError(f"{path} is not a .pt file written by 'nas export --format torch' "
                         f"(needs space, space_options, arch and state_dict)")
    space = get_space(blob["space"], **blob["space_options"])
    arch = space.validate(Arch.from_dict(blob["arch"]))
    return space, arch, build_model(space, arch, state=blob["state_dict"])


def load_model(path: str | Path) -> Any:
    """The torch module (eval mode, trained weights) of a `nas export --format torch` / `nas train` .pt file."""
    return load_torch(path)[2]


def export_torchscript(space: SearchSpace, arch: Arch, out: str | Path, seed: int = 0,
                       state: dict[str, Any] | None = None, atol: float = 1e-4) -> tuple[Path, float]:
    """A traced TorchScript file (loads with `torch.jit.load`, no `nas` needed), checked against the
    module at batch 1 and 8; returns (path, max abs difference)."""
    import os
    import warnings

    import torch
    model = build_model(space, arch, seed, state)
    gen = torch.Generator().manual_seed(seed)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.randn(2, *space.input_shape, generator=gen))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from nas.core.files import hidden_temp
    tmp = hidden_temp(out, ".ts")
    try:
        torch.jit.save(traced, tmp)
        loaded = torch.jit.load(tmp)
        diff = 0.0
        with torch.no_grad():
            for b in CHECK_BATCHES:
                x = torch.randn(b, *space.input_shape, generator=gen)
                ref = model(x)
                diff = max(diff, float((loaded(x) - ref).abs().max()))
                if diff > atol * max(1.0, float(ref.abs().max())):
                    raise NasError(f"TorchScript export of {space.format(arch)!r} differs from the module by "
                                   f"{diff:.3g} at batch {b}; file not written")
        normal_permissions(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out, diff


def export_onnx(space: SearchSpace, arch: Arch, out: str | Path, seed: int = 0, batch: int | None = None,
                state: dict[str, Any] | None = None, atol: float = 1e-4, opset: int | None = None,
                diffs: dict[int, float] | None = None) -> tuple[Path, float]:
    """Export, check and compare with torch; returns (path, max abs difference over the checked batches).

    `batch=None` makes the batch axis dynamic (checked at batch 1 and 8); an int fixes it. `diffs`,
    when given, receives the max abs difference per checked batch size."""
    import onnx
    import torch

    from latency import onnx_io
    if batch is not None and int(batch) < 1:
        raise UsageError(f"batch must be a positive number (or omitted for a dynamic batch axis), got {batch}")
    opset = onnx_io.OPSET if opset is None else int(opset)
    if not 7 <= opset <= onnx.defs.onnx_opset_version():
        raise UsageError(f"opset {opset} is not supported; valid: 7..{onnx.defs.onnx_opset_version()}")
    model = build_model(space, arch, seed, state)
    gen = torch.Generator().manual_seed(seed)
    checks = CHECK_BATCHES if batch is None else (int(batch),)
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.onnx")   # onnx_io writes it atomically (and cleans its stale temps)
    from nas.core.files import clean_stale_temps
    clean_stale_temps(out)
    worst = 0.0
    try:
        example = torch.randn(checks[-1], *space.input_shape, generator=gen)
        try:
            onnx_io.export_onnx(model, example, tmp, opset=opset, dynamic_batch=batch is None)
        except (OSError, RuntimeError) as exc:
            if not onnx_io.write_failed(exc, str(tmp)):
                raise
            from nas.core.files import write_failure
            raise write_failure(out, exc) from None
        onnx.checker.check_model(str(tmp), full_check=True)
        sess = onnx_io.session(tmp)
        for b in checks:
            x = torch.randn(b, *space.input_shape, generator=gen)
            with torch.no_grad():
                ref = model(x).numpy()
            got = onnx_io.run(sess, x.numpy())
            diff = float(np.max(np.abs(ref - got)))
            worst = max(worst, diff)
            if diffs is not None:
                diffs[b] = diff
            scale = float(np.max(np.abs(ref))) or 1.0
            if diff > atol * max(1.0, scale):
                raise NasError(f"ONNX export of {space.format(arch)!r} differs from torch by {diff:.3g} at batch {b} "
                               f"(tolerance {atol * max(1.0, scale):.3g}); file not written")
        normal_permissions(tmp)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, worst


def resolve_out(out: str | Path, fmt: str) -> Path:
    """An existing folder means a file inside it (DEFAULT_NAMES); a missing parent folder is created.
    A name ending in '/' that is not an existing folder is an error (a file named like a folder)."""
    text = str(out)
    path = Path(out)
    if path.is_dir():
        return path / DEFAULT_NAMES[fmt]
    if text.endswith(("/", "\\")):   # a trailing '/' means a folder: make it
        from nas.core.files import check_writable
        check_writable(path / DEFAULT_NAMES[fmt], "--out")
        return path / DEFAULT_NAMES[fmt]
    return path


def load_source(result: str | Path) -> tuple[SearchSpace, Arch, dict[str, Any] | None]:
    """Space, arch and weights (None for a best.json / result.json, which hold no weights) of an export source."""
    if str(result).endswith(".pt"):
        space, arch, model = load_torch(result)
        return space, arch, model.state_dict()
    space, arch, _ = load_result(result)
    return space, arch, None


def export(result: str | Path, fmt: str, out: str | Path, seed: int = 0, *, batch: int | None = None,
           opset: int | None = None) -> dict[str, Any]:
    """Export `result` (a best.json, a `nas train` result.json, or a .pt from either) as `fmt` to `out`
    (a file, or an existing folder to write DEFAULT_NAMES[fmt] into). A .pt source keeps its weights."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    space, arch, state = load_source(result)
    out = resolve_out(out, fmt)
    from nas.core.files import check_writable
    check_writable(out, "--out")   # before the work: an immutable or missing-permission folder says so at once
    info: dict[str, Any] = {"format": fmt, "out": str(out), "arch": space.format(arch),
                            "weights": "from " + str(result) if state is not None else f"random (seed {seed})"}
    if fmt == "onnx":
        diffs: dict[int, float] = {}
        _, diff = export_onnx(space, arch, out, seed, batch=batch, state=state, opset=opset, diffs=diffs)
        info["max_abs_diff_vs_torch"] = diff
        info["max_abs_diff_by_batch"] = diffs
        info["batch"] = "dynamic" if batch is None else int(batch)
    elif fmt == "torchscript":
        _, info["max_abs_diff_vs_torch"] = export_torchscript(space, arch, out, seed, state)
    elif fmt == "torch":
        export_torch(space, arch, out, seed, state)
    else:
        from nas.core.files import atomic_write_text, write_failure
        try:
            atomic_write_text(Path(out), json.dumps({"space": space.name, "space_options": space.options(),
                                                     "arch": space.format(arch), "arch_json": arch.to_dict()},
                                                    indent=1) + "\n")
        except OSError as exc:
            raise write_failure(out, exc) from None
        normal_permissions(out)   # atomic_write_text makes 0644 whatever the umask
    return info
