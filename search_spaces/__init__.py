"""Search-space registry: `get_space("mbconv", width_mult=1.0)`; `SPACES.names()` lists them.

Each space module registers itself on import; the imports below are the list of shipped spaces.
"""
from __future__ import annotations

import inspect
from typing import Any

from nas.errors import UsageError
from nas.registry import Registry
from nas.space import SearchSpace

SPACES: Registry[type[SearchSpace]] = Registry("space")


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


from search_spaces import mbconv  # noqa: E402,F401  (registers)
from search_spaces import hytra  # noqa: E402,F401  (registers)
from search_spaces import nasnet  # noqa: E402,F401  (registers)
from search_spaces import vit_resnas  # noqa: E402,F401  (registers)
from search_spaces import ops_extra  # noqa: E402,F401  (registers extra ops: dwsep)

__all__ = ["SPACES", "get_space", "SearchSpace"]
