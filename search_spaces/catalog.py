"""The search-space registry: `get_space("mbconv", width_mult=1.0)`; `SPACES.names()` lists them.
Every space takes `candidates=FILE` (a candidate list, search_spaces/restrict.py; nb201 has its own).

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
from search_spaces.ofa_mbv3 import OFAMobileNetV3Space
from search_spaces.restrict import restricted
from search_spaces.vit_resnas import VitResNASSpace

#: the shipped spaces: this explicit list is the registry (space modules do not register themselves)
SPACES: Registry[type[SearchSpace]] = Registry("space")
for _cls in (MBConvSpace, NASNetSpace, HyTraSpace, VitResNASSpace, NB201Space, NATSSizeSpace,
             OFAMobileNetV3Space):
    SPACES.register(_cls.name, _cls)


def get_space(name: str, **options: Any) -> SearchSpace:
    """Instantiate a registered space; unknown options raise naming the valid ones."""
    cls = SPACES.get(name)
    params = {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}
    valid = list(params) + ([] if "candidates" in params else ["candidates"])
    bad = sorted(set(options) - set(valid))
    if bad:
        raise UsageError(f"space {name!r} has no option {bad[0]!r}; valid options: {', '.join(valid) or '(none)'}")
    # a space without a candidate option of its own gets the generic one (search_spaces/restrict.py)
    candidates = options.pop("candidates", "all") if "candidates" not in params else "all"
    options = {k: _checked_number(name, k, v, params[k].default) for k, v in options.items()}
    try:
        return cls(**options) if candidates == "all" else restricted(cls, options, candidates)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"bad options for space {name!r}: {exc}") from None




def _checked_number(space: str, key: str, value: Any, default: Any) -> Any:
    """An option whose default is a number must be one: an int option takes whole numbers only
    (224.0 becomes 224; 224.5 is refused, never truncated), and booleans are no numbers."""
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return value
    kind = "an integer" if isinstance(default, int) else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"space {space!r} option {key} must be {kind}, got {str(value)[:60]!r}")
    if isinstance(default, int) and not isinstance(value, int):
        if value != value or value in (float("inf"), float("-inf")) or value != int(value):
            raise UsageError(f"space {space!r} option {key} must be a whole number, got {value!r}")
        return int(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"space {space!r} option {key} must be a finite number, got {value!r}")
    return value
