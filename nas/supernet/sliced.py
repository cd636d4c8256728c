"""Weight-sharing supernets of the benchmark spaces: NATS size space (`nats_sss`) and NAS-Bench-201 (`nb201`).

Both are built the same way: the supernet holds, for every tensor a standalone net of the space can
have, one shared tensor at the largest shape any arch gives it, and a path's forward runs *the
standalone net itself* (``space.build(arch)``, built once per arch on the meta device) with
``torch.func.functional_call`` on slices of the shared tensors. So the supernet path computes exactly
what the standalone net with the extracted weights computes - by construction, not by a second
implementation of the ops.

* ``nats_sss`` is channel-slimmable (Yu et al. 2019, "Slimmable Neural Networks"; the NATS size
  space's supernet as in BossNAS / Dong et al. 2021): a width w of a layer uses the first w channels of
  the shared 64-channel tensors (conv weights ``[:cout, :cin]``, BatchNorm ``[:c]``), as the mbconv
  supernet slices its expansions. A cell whose input and output widths differ has a 1x1 conv on its
  skip edge; that conv is shared between all such width pairs (first channels). Trained with the
  sandwich rule (largest, smallest and random widths, in-place distillation).
* ``nb201`` is a single-path cell supernet (Guo et al. 2020, SPOS; as `nas.supernet.cells` for
  nasnet): every edge of every cell holds one set of weights per op, an arch picks one op per edge.
  Trained with FairNAS paths (Chu et al. 2021: each op of each edge once per step, ``sampling = "fair"``);
  SPOS's uniform single paths ranked worse here (`NB201Supernet`).

BatchNorm: the shared statistics live in real ``nn.BatchNorm2d`` modules (`bn_modules` and
`recalibrate_bn` find and reset them); the path's BN layers run on slices of their buffers, so the
running statistics a path computes land in the shared ones (its ``momentum`` follows the shared module's).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
import torch.nn as nn

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace

KeyMap = Callable[[Arch, str], str]
CACHE = 64   # standalone (meta-device) nets kept per supernet


def _slot(key: str) -> str:
    """A state-dict key as a module name (no dots)."""
    return key.replace(".", "__")


def _leaf_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if not list(m.children())}


class SlicedSupernet(nn.Module):
    """Shared tensors at their largest shape; a path runs the standalone net on slices of them.

    `keymap(arch, key)` names the shared tensor a standalone key of `arch` uses (identity: one tensor
    per position, sliced by width; with the op in it: one tensor per op). `probes`: archs whose
    standalone nets together hold every key at its largest size."""

    sampling: ClassVar[str] = "sandwich"

    def __init__(self, space: SearchSpace, probes: Sequence[Arch], keymap: KeyMap, *, extremes: int = 128,
                 seed: int = 0, probe_space: SearchSpace | None = None) -> None:
        super().__init__()
        self.space, self._keymap = space, keymap
        shapes: dict[str, list[int]] = {}
        kinds: dict[str, str] = {}          # shared key -> "bn" (its BN module's slot) or "param"
        for arch in probes:
            with torch.device("meta"):
                net = (probe_space or space).build(arch)
            for name, mod in _leaf_modules(net).items():
                for pname, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                    key = keymap(arch, f"{name}.{pname}" if name else pname)
                    old = shapes.get(key)
                    shapes[key] = list(t.shape) if old is None else [max(a, b) for a, b in zip(old, t.shape)]
                    kinds[key] = "bn" if isinstance(mod, nn.modules.batchnorm._BatchNorm) else "param"
        self.bns = nn.ModuleDict()
        self.params = nn.ParameterDict()
        for key in sorted(shapes):
            if kinds[key] == "bn":
                prefix = key.rsplit(".", 1)[0]
                if _slot(prefix) not in self.bns:
                    self.bns[_slot(prefix)] = nn.BatchNorm2d(shapes[prefix + ".weight"][0])
            else:
                self.params[_slot(key)] = nn.Parameter(_init(key, shapes[key]))
        self._nets: OrderedDict[tuple[Any, ...], nn.Module] = OrderedDict()
        rng = np.random.default_rng(seed)
        cands = [space.sample(rng) for _ in range(extremes)] + _valid(space, probes)
        for text in getattr(space, "presets", {}).values():
            try:
                cands.append(space.parse(text))
            except NasError:
                continue
        macs = [space.macs(a) for a in cands]
        self._largest, self._smallest = cands[int(np.argmax(macs))], cands[int(np.argmin(macs))]
        self._arch = self._largest

    # ---- paths -------------------------------------------------------------------------------
    def largest(self) -> Arch:
        return self._largest

    def smallest(self) -> Arch:
        return self._smallest

    def set_arch(self, arch: Arch) -> None:
        self._arch = self.space.validate(arch)

    @property
    def arch(self) -> Arch:
        return self._arch

    def _meta_net(self, arch: Arch) -> nn.Module:
        key = tuple(arch.genes)
        net = self._nets.get(key)
        if net is None:
            with torch.device("meta"):
                net = self.space.build(arch)
            self._nets[key] = net
            if len(self._nets) > CACHE:
                self._nets.popitem(last=False)
        else:
            self._nets.move_to_end(key)
        return net

    def _shared(self, arch: Arch, key: str) -> tuple[torch.Tensor, nn.Module | None]:
        """The shared tensor behind standalone key `key` of `arch` (and its BN module, for BN tensors)."""
        skey = self._keymap(arch, key)
        prefix, _, leaf = skey.rpartition(".")
        if _slot(prefix) in self.bns:
            bn = self.bns[_slot(prefix)]
            return getattr(bn, leaf), bn
        return self.params[_slot(skey)], None

    def _tensors(self, arch: Arch, net: nn.Module) -> dict[str, torch.Tensor]:
        """The standalone state of `arch` as slices (views) of the shared tensors; BN momentum synced."""
        out: dict[str, torch.Tensor] = {}
        for name, mod in _leaf_modules(net).items():
            for pname, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
                key = f"{name}.{pname}" if name else pname
                shared, bn = self._shared(arch, key)
                out[key] = shared[tuple(slice(0, n) for n in t.shape)] if t.dim() else shared
                if bn is not None:
                    mod.momentum = bn.momentum     # type: ignore[assignment]
                    mod.track_running_stats = bn.track_running_stats
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self._meta_net(self._arch)
        net.train(self.training)
        return torch.func.functional_call(net, self._tensors(self._arch, net), (x,), strict=True)

    # ---- inherited weights -------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch) -> dict[str, Any]:
        """A state dict for ``space.build(arch)`` holding this supernet's weights of `arch`."""
        arch = self.space.validate(arch)
        return {k: v.detach().clone() for k, v in self._tensors(arch, self._meta_net(arch)).items()}


def _init(key: str, shape: list[int]) -> torch.Tensor:
    """PyTorch's default initialisation of a conv / linear weight (Kaiming uniform, a=sqrt(5));
    biases (linear layers) uniform in +-1/sqrt(fan_in) of their weight are drawn as zeros here."""
    t = torch.empty(shape)
    if len(shape) > 1:
        nn.init.kaiming_uniform_(t, a=math.sqrt(5))
    else:
        nn.init.zeros_(t)
    return t


# ---- the two spaces ------------------------------------------------------------------------------
def nats_sss_supernet(space: SearchSpace) -> SlicedSupernet:
    """Channel-slimmable: every standalone key is its own shared tensor, sliced to the arch's widths."""
    from search_spaces.nats_sss import LAYERS, WIDTHS, NATSSizeSpace
    if not isinstance(space, NATSSizeSpace):
        raise UsageError(f"the nats_sss supernet needs a nats_sss space, got {space.name!r}")
    top, second = max(WIDTHS), sorted(WIDTHS)[-2]
    probes = [space.make([top] * LAYERS)]
    for i in range(LAYERS):   # one width below the top: the width-changing skip convs appear
        probes.append(space.make([second if j == i else top for j in range(LAYERS)]))
    return SlicedSupernet(space, probes, lambda arch, key: key)


class NB201Supernet(SlicedSupernet):
    """Single path: one set of weights per (cell, edge, op); trained with FairNAS sampling (each op of each
    edge once per step): over 4 supernet seeds on 50 archs uniform single paths ranked below chance against
    CIFAR-10 truth (Kendall -0.23 at 4 epochs), fair ones at 0.01 (4 epochs) and 0.24 (8), README
    "Measuring supernet ranking"."""

    sampling: ClassVar[str] = "fair"


def nb201_supernet(space: SearchSpace) -> SlicedSupernet:
    from search_spaces.nb201 import NB201Space
    from search_spaces.nb201_ops import EDGES, NB201_OPS
    if not isinstance(space, NB201Space):
        raise UsageError(f"the nb201 supernet needs an nb201 space, got {space.name!r}")

    def keymap(arch: Arch, key: str) -> str:
        parts = key.split(".")
        if len(parts) > 3 and parts[1] == "edges":     # "<cell>.edges.<e>.<rest>": the edge's op in the name
            e = int(parts[2])
            return ".".join(parts[:3] + [str(arch.genes[e])] + parts[3:])
        return key

    # the five uniform cells hold every (edge, op); a candidate list need not contain them: probe unrestricted
    free = NB201Space(**{k: v for k, v in space.options().items() if k != "candidates"})  # type: ignore[arg-type]
    probes = [free.make([op] * len(EDGES)) for op in NB201_OPS]
    return NB201Supernet(space, probes, keymap, probe_space=free)


def _valid(space: SearchSpace, archs: list[Arch]) -> list[Arch]:
    out = []
    for a in archs:
        try:
            out.append(space.validate(a))
        except NasError:
            continue
    return out


__all__ = ["NB201Supernet", "SlicedSupernet", "nats_sss_supernet", "nb201_supernet"]
