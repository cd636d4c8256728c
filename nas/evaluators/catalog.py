"""The evaluator registry: name -> factory `(space, seed, **options) -> Evaluator`.

A leaf module: the list below is the registry; no evaluator module imports it. Factories import
their module when called, so listing evaluators (`nas list evaluators`) loads no torch.
"""
from __future__ import annotations

from typing import Any, Callable

from nas.core.registry import Registry
from nas.core.space import SearchSpace
from nas.evaluators.base import Evaluator

EvaluatorFactory = Callable[..., Evaluator]


def _zero_cost(space: SearchSpace, seed: int = 0, **options: Any) -> Evaluator:
    from nas.evaluators.zero_cost import make_zero_cost
    return make_zero_cost(space, seed=seed, **options)


def _train(space: SearchSpace, seed: int = 0, **options: Any) -> Evaluator:
    from nas.evaluators.training import make_train_evaluator
    return make_train_evaluator(space, seed=seed, **options)


def _tabular(space: SearchSpace, seed: int = 0, **options: Any) -> Evaluator:
    from nas.evaluators.tabular import make_tabular
    return make_tabular(space, seed=seed, **options)


def _predictor(space: SearchSpace, seed: int = 0, **options: Any) -> Evaluator:
    from nas.evaluators.predictor import make_predictor
    return make_predictor(space, seed=seed, **options)


def _supernet(space: SearchSpace, seed: int = 0, **options: Any) -> Evaluator:
    from nas.supernet.trainer import supernet_evaluator_from_checkpoint
    return supernet_evaluator_from_checkpoint(space, seed=seed, **options)


EVALUATORS: Registry[EvaluatorFactory] = Registry("evaluator")
for _name, _factory in (("zero-cost", _zero_cost), ("train", _train), ("supernet", _supernet), ("tabular", _tabular),
                       ("predictor", _predictor)):
    EVALUATORS.register(_name, _factory)


def make_evaluator(name: str, space: SearchSpace, seed: int = 0, **options: Any) -> Evaluator:
    return EVALUATORS.get(name)(space, seed=seed, **options)
