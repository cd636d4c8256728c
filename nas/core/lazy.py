"""`numpy`, imported on first use: `from nas.core.lazy import numpy as np` in a module that must be
importable without numpy's cost (about 0.2 s CPU), e.g. the modules `nas list` reads (issue 29).

The stand-in is a module object; on the first attribute read it imports numpy and copies numpy's
namespace into its own, so later reads (`np.zeros`) are plain attribute look-ups, as fast as on numpy
itself. Type checkers see the real numpy (modules import it under TYPE_CHECKING).
"""
from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A stand-in for the module `name`, imported when one of its attributes is first read."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str) -> Any:   # only called for names not yet in __dict__
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        real = importlib.import_module(self.__dict__["_lazy_target"])
        self.__dict__.update({k: v for k, v in vars(real).items() if not k.startswith("__")})
        value = getattr(real, attr)   # a submodule numpy itself loads lazily (np.random, np.linalg ...)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_target']!r}>"


numpy = LazyModule("numpy")
