"""The search-space registry: `get_space("mbconv", width_mult=1.0)`; `SPACES.names()` lists them.

A leaf module: it imports every shipped space and lists them below; no space module imports it.
A new space is one import and one entry in the tuple.
"""
from __future__ import annotations

import inspect
from typing import Any

from nas.core.errors import UsageError
from nas.core.registry import Registry
from nas.core.space import SearchSpace

import search_spaces.ops_extra  # noqa: F401  (adds the dwsep op to the op vocabulary)
from search_spaces.hytra import HyTraSpace
from search_spaces.mbconv import MBConvSpace
from search_spaces.nasnet import NASNetSpace
from search_spaces.nats_sss import NATSSizeSpace
from search_spaces.nb201 import NB201Space
from search_spaces.vit_resnas import VitResNASSpace

#: the shipped spaces: this explicit list is the registry (space modules do not register themselves)
SPACES: Registry[type[SearchSpace]] = Registry("space")
for _cls in (MBConvSpace, NASNetSpace, HyTraSpace, VitResNASSpace, NB201Space, NATSSizeSpace):
    SPACES.register(_cls.name, _cls)


def get_space(name: str, **options: Any) -> SearchSpace:
    """Instantiate a registered space; unknown options raise naming the valid ones."""
    cls = SPACES.get(name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(f"space {name!r} has no option {bad[0]!r}; valid options: {', '.join(valid) or '(none)'}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad options for space {name!r}: {exc}") from None


