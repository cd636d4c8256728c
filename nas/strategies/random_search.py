"""Random search: uniform samples of the space that meet the constraints (the baseline)."""
from __future__ import annotations

from nas.core.arch import Arch
from nas.strategies.base import Strategy


class RandomSearch(Strategy):
    name = "random"

    def ask(self) -> Arch:
        return self.sample_feasible()
