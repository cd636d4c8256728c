"""The strategy registry: name -> Strategy class (`STRATEGIES.get("evolution")`).

A leaf module: the explicit list below is the registry; no strategy module imports it.
"""
from __future__ import annotations

from nas.core.registry import Registry
from nas.strategies.base import Strategy
from nas.strategies.differentiable import DifferentiableStrategy
from nas.strategies.evolution import RegularizedEvolution
from nas.strategies.exact import ExactStrategy
from nas.strategies.nsga2 import NSGA2
from nas.strategies.optuna_sampler import TPE, OptunaNSGA2
from nas.strategies.predictor import PredictorSearch
from nas.strategies.random_search import RandomSearch
from nas.strategies.weight_sharing import DartsStrategy, SinglePathStrategy, SupernetStrategy
from nas.strategies.zero_cost import ZeroCostWarmup

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")
for _cls in (RegularizedEvolution, RandomSearch, NSGA2, TPE, OptunaNSGA2, ZeroCostWarmup,
             SupernetStrategy, SinglePathStrategy, DartsStrategy, DifferentiableStrategy, ExactStrategy, PredictorSearch):
    STRATEGIES.register(_cls.name, _cls)
