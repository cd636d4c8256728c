"""Weight-sharing supernets: one network holding the weights of every arch of a space.

A supernet (Once-for-All, Cai et al. 2020; Single-Path NAS, Stamoulis et al. 2019; BigNAS, Yu et
al. 2020) is a torch module with three extra methods:

* ``set_arch(arch)`` - the path the next forward passes run (any valid arch of its space);
* ``largest()`` / ``smallest()`` - the two extreme archs the sandwich rule trains every step;
* ``extract(arch)`` - a state dict for ``space.build(arch)``: the standalone net computes exactly
  what the supernet computes on that path (inherited weights, exportable with
  ``nas.deploy.export.export_onnx(space, arch, out, state=...)``).

A space provides its supernet either with a ``supernet()`` method or by registering a factory in
`SUPERNETS` under its name; `build_supernet` looks for both. Supernets are trained on a *training
space*: the same decisions with cheaper options (resolution, width, classes of the dataset), see
`training_space`. This module stays torch-free so that the registries import fast.

May import nas.core, search_spaces, latency, nas.store, nas.deploy, nas.training and nas.cluster.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.registry import Registry
from nas.core.space import SearchSpace

if TYPE_CHECKING:
    import torch


class Supernet(Protocol):
    """What the trainers, evaluators and exporters need from a supernet (a torch module)."""

    space: SearchSpace

    def set_arch(self, arch: Arch) -> None: ...

    def largest(self) -> Arch: ...

    def smallest(self) -> Arch: ...

    def extract(self, arch: Arch) -> dict[str, "torch.Tensor"]: ...

    def __call__(self, x: "torch.Tensor") -> "torch.Tensor": ...


SupernetFactory = Callable[[SearchSpace], Supernet]
SUPERNETS: Registry[SupernetFactory] = Registry("supernet")


def _mbconv_factory(space: SearchSpace) -> Supernet:
    from nas.supernet.mbconv import MBConvSupernet
    return MBConvSupernet(space)  # type: ignore[arg-type]


def _vit_resnas_factory(space: SearchSpace) -> Supernet:
    from nas.supernet.vit_resnas import ViTResNASSupernet
    return ViTResNASSupernet(space)  # type: ignore[arg-type]


def _fabric_factory(space: SearchSpace) -> Supernet:
    from nas.supernet.fabric import FabricSupernet
    return FabricSupernet(space)  # type: ignore[return-value]


def _cell_factory(space: SearchSpace) -> Supernet:
    from nas.supernet.cells import CellSupernet
    return CellSupernet(space)  # type: ignore[arg-type, return-value]


def _ofa_mbv3_factory(space: SearchSpace) -> Supernet:
    from nas.supernet.ofa_mbv3 import OFASupernet
    return OFASupernet(space)  # type: ignore[arg-type]


def _nats_sss_factory(space: SearchSpace) -> Supernet:
    from nas.supernet.sliced import nats_sss_supernet
    return nats_sss_supernet(space)  # type: ignore[return-value]


def _nb201_factory(space: SearchSpace) -> Supernet:
    from nas.supernet.sliced import nb201_supernet
    return nb201_supernet(space)  # type: ignore[return-value]


SUPERNETS.register("mbconv", _mbconv_factory)
SUPERNETS.register("ofa_mbv3", _ofa_mbv3_factory)
SUPERNETS.register("hytra", _fabric_factory)
SUPERNETS.register("vit_resnas", _vit_resnas_factory)
SUPERNETS.register("nasnet", _cell_factory)
SUPERNETS.register("nats_sss", _nats_sss_factory)
SUPERNETS.register("nb201", _nb201_factory)


def build_supernet(space: SearchSpace) -> Supernet:
    """The supernet of `space`: its own ``supernet()`` method if it has one, else the registered one."""
    own = getattr(space, "supernet", None)
    if callable(own):
        return own()
    if space.name not in SUPERNETS:
        raise UsageError(f"space {space.name!r} has no weight-sharing supernet; spaces with one: "
                         f"{', '.join(SUPERNETS.names())}")
    return SUPERNETS.get(space.name)(space)


def training_space(space: SearchSpace, **overrides: Any) -> SearchSpace:
    """`space` with some options changed (e.g. resolution=32, num_classes=10 for a small dataset).

    Only options the space has are applied (others are ignored, so callers can pass the same
    overrides to every space). The result must have the same decisions as `space`, so that an
    arch found while training on the cheaper space is an arch of `space` too (its latency is then
    predicted with the tables of `space`)."""
    from search_spaces.catalog import get_space
    opts = space.options()
    changed = {k: v for k, v in overrides.items() if k in opts and v is not None and opts[k] != v}
    if not changed:
        return space
    if "patch" in opts and "resolution" in changed and "patch" not in changed:
        patch = _fitting_patch(space, int(changed["resolution"]))
        if patch != opts["patch"]:
            changed["patch"] = patch
    small = get_space(space.name, **{**opts, **changed})
    if [(d.name, d.choices) for d in small.decisions] != [(d.name, d.choices) for d in space.decisions]:
        raise UsageError(f"training {space.name} with options {changed} changes its decisions, so archs found "
                         f"there are not archs of the searched space; change other options")
    return small


def _fitting_patch(space: SearchSpace, resolution: int) -> int:
    """The patch a patch-embedding space (vit_resnas) trains with at `resolution` when no patch is
    given: the searched patch if it still makes a valid grid, else the largest valid patch whose
    last stage keeps a grid of at least 2 (else the largest valid one): at 32 px with 3 stages,
    patch 4 (8x8 tokens, 2x2 in the last stage), where the searched 14 makes no whole grid."""
    from search_spaces.catalog import get_space
    opts = space.options()
    valid: list[int] = []
    for patch in [int(opts["patch"])] + list(range(resolution, 0, -1)):
        try:
            small = get_space(space.name, **{**opts, "resolution": resolution, "patch": patch})
        except UsageError:
            continue
        if patch == opts["patch"]:
            return patch
        valid.append(patch)
        grid = getattr(small, "grid", None)
        if grid is None or grid(getattr(small, "num_stages", 1) - 1) >= 2:
            return patch
    return valid[0] if valid else int(opts["patch"])


__all__ = ["SUPERNETS", "Supernet", "build_supernet", "training_space"]
