"""Search strategies; each module registers itself in STRATEGIES."""
from nas.strategies.base import STRATEGIES, Strategy
from nas.strategies import random_search, evolution, nsga2, optuna_sampler, zero_cost  # noqa: F401,E402  (registers)
from nas.strategies import weight_sharing  # noqa: F401,E402  (registers supernet, single-path, darts)

__all__ = ["STRATEGIES", "Strategy"]
