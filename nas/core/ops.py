"""The op vocabulary's registry: LayerSpec op name -> torch module builder + MAC count.

The ops themselves are defined by the spaces (search_spaces/ops.py and the *_ops.py modules) and
register here when imported; a space's module imports the ops its LayerSpecs use, so any spec a space
produced can be built (to profile it) and counted. latency/ builds and counts layers through this
registry without importing search_spaces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from nas.core.layer import LayerSpec
from nas.core.registry import Registry

if TYPE_CHECKING:
    import torch.nn as nn


@dataclass(frozen=True)
class OpDef:
    build: Callable[..., "nn.Module"]          # called with the spec's params as keyword arguments
    macs: Callable[[LayerSpec], int]           # multiply-accumulates for batch 1


OPS: Registry[OpDef] = Registry("op")


def build_layer(spec: LayerSpec) -> "nn.Module":
    return OPS.get(spec.op).build(**spec.kwargs)


def layer_macs(spec: LayerSpec) -> int:
    return OPS.get(spec.op).macs(spec)
