"""Peer optimisers for benchmarks/search_optimum.py, each driven through its own ask/tell interface on
the same problem: the same evaluator (latency + MACs), the same budget, and infeasible archs (over
the latency bound) counted as evaluations but never as a result. Each peer sees the mbconv decisions
as integer/categorical variables (choice index per decision) and the bound as one constraint
(`latency - bound <= 0`) in its own constraint form where it has one.

- `optuna-tpe`, `optuna-nsga2-direct`: Optuna's TPESampler / NSGAIISampler with `constraints_func`
  (study.ask / study.tell, one categorical param per decision);
- `pymoo-ga`: pymoo's GA (integer sampling, SBX + polynomial mutation with rounding, duplicates
  eliminated, population 50), one inequality constraint;
- `nni-evolution`: NNI 3's RegularizedEvolution (population 100, sample 25, mutation 0.05: its
  defaults) over an `nni.mutable` space, with NNI's own way of meeting a hardware bound: its
  hardware-aware NAS filters candidates by predicted latency before they are evaluated, so here an
  infeasible proposal is rejected by the latency model (`Setup.feasible`) and proposed again: it is
  not evaluated, not counted toward the budget and never joins the population (at most `NNI_REJECTS`
  rejections in a row; then the infeasible proposal is evaluated and counted, scored 0).
"""
from __future__ import annotations

import collections
import warnings
from typing import Any, Callable

import numpy as np

Metrics = dict[str, float] | None
#: NNI: infeasible proposals rejected in a row before one is evaluated anyway (see the module doc)
NNI_REJECTS = 1000


def why_not(name: str, module: str) -> str | None:
    """None when the peer can run here, else why not (one line)."""
    if name == "nni-evolution":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from nni.nas.strategy import RegularizedEvolution  # noqa: F401
        except Exception as exc:   # NNI imports lightning and more at package level
            return f"'nni' is installed but its NAS strategies do not import ({type(exc).__name__}: {exc})"
    return None


def run_peer(name: str, s: Any, seed: int, trials: int) -> list[Metrics]:
    """Metrics of each of the `trials` evaluations of peer `name`, in order."""
    return {"optuna-tpe": _optuna, "optuna-nsga2-direct": _optuna, "pymoo-ga": _pymoo,
            "nni-evolution": _nni}[name](name, s, seed, trials)


def _evaluator(s: Any) -> Callable[[list[int]], tuple[dict[str, float], float]]:
    (target, bound), = s.bounds.items()

    def evaluate(codes: list[int]) -> tuple[dict[str, float], float]:
        arch = s.space.decode(np.asarray(codes, dtype=np.int64))
        metrics = s.evaluator(arch)
        return metrics, float(metrics[f"latency_ms.{target}"]) - bound   # <= 0: feasible
    return evaluate


def _optuna(name: str, s: Any, seed: int, trials: int) -> list[Metrics]:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evaluate, decisions = _evaluator(s), s.space.decisions
    # Optuna 5 reads constraints set on the trial (Trial.set_constraint); older ones a constraints_func
    direct = hasattr(optuna.trial.Trial, "set_constraint")
    kwargs = {} if direct else {"constraints_func": lambda ft: [ft.user_attrs["violation"]]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = (optuna.samplers.TPESampler(seed=seed, **kwargs) if name == "optuna-tpe"
                   else optuna.samplers.NSGAIISampler(seed=seed, **kwargs))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    out: list[Metrics] = []
    for _ in range(trials):
        trial = study.ask()
        codes = [trial.suggest_categorical(d.name, list(range(len(d.choices)))) for d in decisions]
        metrics, violation = evaluate(codes)
        if direct:
            trial.set_constraint("latency", violation)
        else:
            trial.set_user_attr("violation", violation)
        study.tell(trial, metrics["score"])
        out.append(metrics)
    return out


def _pymoo(name: str, s: Any, seed: int, trials: int) -> list[Metrics]:
    from pymoo.algorithms.soo.nonconvex.ga import GA
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.problems.static import StaticProblem
    evaluate = _evaluator(s)
    sizes = np.array([len(d.choices) for d in s.space.decisions])
    problem = Problem(n_var=len(sizes), n_obj=1, n_ieq_constr=1, xl=np.zeros(len(sizes)), xu=sizes - 1, vtype=int)
    algorithm = GA(pop_size=50, sampling=IntegerRandomSampling(),
                   crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                   mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algorithm.setup(problem, termination=("n_evals", trials), seed=seed, verbose=False)
    out: list[Metrics] = []
    while len(out) < trials:
        pop = algorithm.ask()
        f, g = [], []
        for x in pop.get("X"):
            metrics, violation = evaluate([int(v) for v in np.clip(np.round(x), 0, sizes - 1)])
            if len(out) < trials:
                out.append(metrics)
            f.append([-metrics["score"]])   # pymoo minimises
            g.append([violation])
        Evaluator().eval(StaticProblem(problem, F=np.array(f), G=np.array(g)), pop)
        algorithm.tell(infills=pop)
    return out


def _nni(name: str, s: Any, seed: int, trials: int) -> list[Metrics]:
    """NNI's RegularizedEvolution with its own random/new_individual and population update, over a
    duck-typed model space (a dict of nni Categoricals); our loop evaluates what it proposes."""
    import logging
    logging.getLogger("nni").setLevel(logging.WARNING)   # NNI logs every individual at INFO
    from nni.mutable import Categorical
    from nni.nas.strategy import RegularizedEvolution
    from nni.nas.strategy.evolution import Individual
    evaluate, decisions = _evaluator(s), s.space.decisions
    space = {d.name: Categorical(list(range(len(d.choices))), label=d.name) for d in decisions}

    class Space:
        def random(self, memo: dict[str, Any], random_state: Any) -> dict[str, Any]:
            for key, mutable in space.items():
                memo[key] = mutable.random(random_state=random_state)
            return dict(memo)

        def simplify(self) -> dict[str, Any]:
            return space

        def freeze(self, sample: dict[str, Any]) -> dict[str, Any]:
            return dict(sample)

    strategy = RegularizedEvolution(seed=seed)
    strategy._model_space = Space()
    population: collections.deque[Any] = collections.deque()
    strategy._population = population
    out: list[Metrics] = []
    while len(out) < trials:
        propose = strategy.random if len(population) < strategy.population_size else strategy.new_individual
        sample = None
        for _ in range(NNI_REJECTS):   # the latency filter: infeasible proposals are not evaluated or counted
            sample = _propose(propose)
            if sample is None or s.feasible(s.space.decode(np.asarray([int(sample[d.name]) for d in decisions],
                                                                       dtype=np.int64))):
                break
        if sample is None:
            break
        metrics, violation = evaluate([int(sample[d.name]) for d in decisions])
        out.append(metrics)
        population.append(Individual(sample, metrics["score"] if violation <= 0 else 0.0))
        if len(population) > strategy.population_size:
            population.popleft()
    return out


def _propose(propose: Callable[[], Any]) -> Any:
    """One NNI proposal; NNI raises on a duplicate sample and retries (RetrySamplingHelper): so do we."""
    for _ in range(100):
        try:
            return propose()
        except Exception:
            continue
    return None
