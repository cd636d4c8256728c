"""Search strategies; each module registers itself in STRATEGIES."""
from nas.strategies.base import STRATEGIES, Strategy
from nas.strategies import random_search, evolution  # noqa: F401,E402  (registers)

__all__ = ["STRATEGIES", "Strategy"]
