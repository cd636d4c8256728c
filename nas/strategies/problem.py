"""`SearchProblem`: what a model-aware strategy may know about the problem it searches.

`nas search` checks archs against latency bounds and scores them with an evaluator; most
strategies only see the resulting `feasible` test and the trials. Strategies that set the class
attribute ``takes_problem = True`` also get the problem itself: the space, the latency model and
bound of each target, and which evaluator scores. From it they can read, where the problem allows,
**additive tables**: a per-decision, per-choice value whose sum (plus a constant) is the
latency on a target or the score of an arch. That holds for separable spaces (each decision's
layers depend on that decision alone, `SearchSpace.separable_layers`) with LUT latency models, and
for scores that are sums over layers (`--evaluator zero-cost` with `proxy=flops` or `params`).
`--strategy exact` solves such problems exactly; `evolution` uses the latency tables to repair
children toward the bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from nas.core.lazy import numpy as np  # numpy on first use: `nas list` needs none (issue 29)

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace

#: zero-cost proxies whose value is a sum over the arch's layers -> per-layer count
ADDITIVE_PROXIES = ("flops", "params")


@dataclass(frozen=True, eq=False)
class AdditiveTable:
    """value(arch) = const + sum_i values[i][code_i], `code_i` the choice index of decision i."""

    const: float
    values: tuple[np.ndarray, ...]

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        """Values of a batch of encoded archs (N x decisions)."""
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        out = np.full(len(codes), self.const, dtype=np.float64)
        for i, v in enumerate(self.values):
            out += v[codes[:, i]]
        return out

    def minimum(self) -> float:
        return float(self.const + sum(v.min() for v in self.values))


@dataclass(frozen=True)
class SearchProblem:
    space: SearchSpace
    models: Mapping[str, Any] = field(default_factory=dict)     # target -> latency model (predict, predict_codes)
    bounds: Mapping[str, float] = field(default_factory=dict)   # target -> bound in ms (bounded targets only)
    evaluator: str = "zero-cost"
    evaluator_options: Mapping[str, Any] = field(default_factory=dict)

    # ---- latency ------------------------------------------------------------------------------
    def latency_table(self, target: str) -> AdditiveTable | None:
        """The latency of `target` as an additive table, or None when the space or model is not separable."""
        model = self.models[target]
        if self.space.separable_layers() is None or not getattr(model, "separable", False):
            return None
        sizes = [len(d.choices) for d in self.space.decisions]
        # one vectorised prediction: the all-first-choices arch, then each single-decision change
        rows = [np.zeros(len(sizes), dtype=np.int64)]
        for i, n in enumerate(sizes):
            for j in range(1, n):
                code = np.zeros(len(sizes), dtype=np.int64)
                code[i] = j
                rows.append(code)
        lat = np.asarray(model.predict_codes(np.stack(rows)), dtype=np.float64)
        base, k, values = float(lat[0]), 1, []
        for n in sizes:
            values.append(np.concatenate([[0.0], lat[k:k + n - 1] - base]))
            k += n - 1
        return AdditiveTable(base, tuple(values))

    def latency_tables(self) -> dict[str, AdditiveTable] | None:
        """Additive tables of every bounded target, or None if one of them is not additive."""
        tables = {t: self.latency_table(t) for t in self.bounds}
        if any(t is None for t in tables.values()):
            return None
        return {t: tab for t, tab in tables.items() if tab is not None}

    # ---- score --------------------------------------------------------------------------------
    def why_score_not_additive(self) -> str | None:
        """None when `score_table` can be built, else the reason in words."""
        if self.space.separable_layers() is None:
            return f"space {self.space.name!r} is not separable (its layers depend on several decisions at once)"
        proxy = self.evaluator_options.get("proxy")
        if self.evaluator != "zero-cost" or proxy not in ADDITIVE_PROXIES:
            given = f"--evaluator {self.evaluator}" + (f" proxy={proxy}" if proxy is not None else "")
            return (f"the score of {given} is not a sum over layers (additive scores: --evaluator zero-cost "
                    f"with --evaluator-option proxy={' or proxy='.join(ADDITIVE_PROXIES)})")
        return None

    def score_table(self) -> AdditiveTable:
        """The evaluator's `score` as an additive table; UsageError naming why when it is not one."""
        why = self.why_score_not_additive()
        if why is not None:
            raise UsageError(why)
        fixed, per = self.space.separable_layers() or ([], [])
        count = _layer_count(str(self.evaluator_options["proxy"]))
        values = tuple(np.array([float(sum(count(s) for s in specs)) for specs in choices]) for choices in per)
        return AdditiveTable(float(sum(count(s) for s in fixed)), values)

    def encode(self, arch: Arch) -> np.ndarray:
        return self.space.encode(arch)


def _layer_count(proxy: str) -> Callable[[Any], int]:
    from search_spaces.op_params import layer_params
    from search_spaces.ops import layer_macs
    return {"flops": layer_macs, "params": layer_params}[proxy]


def problem_options(strategy_cls: type, space: SearchSpace, models: Mapping[str, Any], bounds: Mapping[str, float],
                    evaluator: str, evaluator_options: Mapping[str, Any]) -> dict[str, Any]:
    """`{"problem": SearchProblem(...)}` for strategies that take one (``takes_problem``), else {}."""
    if not getattr(strategy_cls, "takes_problem", False):
        return {}
    return {"problem": SearchProblem(space, dict(models), dict(bounds), evaluator, dict(evaluator_options))}
