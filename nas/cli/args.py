"""Argument helpers shared by the `nas` subcommand modules (parsing `-o key=value`, --json output)."""
from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from nas.core.errors import UsageError


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def space_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """Parse repeated `-o key=value` (values as JSON where they parse, else strings)."""
    out: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"space option {pair!r} must look like key=value (e.g. -o width_mult=0.75)")
        out[key.strip()] = _json_value(value.strip())
    return out


def add_space_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--space", required=required, default=None if required else "mbconv",
                   help="search space (see 'nas list spaces')")
    p.add_argument("-o", "--space-option", action="append", metavar="KEY=VALUE",
                   help="space option, repeatable (e.g. -o width_mult=0.75 -o resolution=192)")


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=1, default=str) if getattr(args, "json", False) else text)


def int8_text(info: dict[str, Any]) -> str:
    left = f"; ops left in float: {', '.join(info['float_ops'])}" if info["float_ops"] else ""
    return (f"wrote {info['out']}: int8 QDQ ONNX ({info['int8_bytes'] / 1e3:.0f} kB, float {info['float_bytes'] / 1e3:.0f} kB), "
            f"runs in onnxruntime{left}; weights {info['weights']}\n"
            f"held-out accuracy on {info['dataset']} ({info['heldout_images']} images): float {info['accuracy_float']:.4f}, "
            f"int8 {info['accuracy_int8']:.4f} (drop {100 * info['accuracy_drop']:+.2f} points; the two agree on "
            f"{100 * info['agreement']:.1f}%)")


class Terminated(BaseException):
    """SIGTERM (a scheduler or `kill`): stop like Ctrl-C - the running trial is retried on resume."""
