"""Issue 30: the supernet trainer's optimizer, warm-up and path sampling (sandwich / uniform / fair)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from nas.core.errors import UsageError
from nas.supernet import build_supernet
from nas.supernet.sampling import lr_factor, resolve_sampling, step_paths
from nas.supernet.trainer import SandwichConfig, train_supernet
from search_spaces.catalog import get_space


def _data(res: int = 8, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, res, res, generator=g), torch.arange(n) % 4


@pytest.mark.quick
def test_nb201_trains_fair_paths_unless_the_space_keeps_to_a_candidate_list() -> None:
    """nb201's supernet trains FairNAS paths by default; on `-o candidates=naslib` fair paths would leave the
    list (a path takes every op of every edge), so the default falls back to uniform paths drawn from the
    list and an explicit `fair` is one line naming the list."""
    small = dict(channels=4, cells=1, resolution=8)
    whole, listed = build_supernet(get_space("nb201", **small)), build_supernet(get_space("nb201", candidates="naslib", **small))
    assert resolve_sampling(whole, None) == "fair" and resolve_sampling(listed, None) == "uniform"
    assert resolve_sampling(listed, "uniform") == "uniform" and resolve_sampling(whole, "fair") == "fair"
    with pytest.raises(UsageError, match="sampling 'fair' .* leaves the candidate list naslib"):
        resolve_sampling(listed, "fair")
    rng = np.random.default_rng(0)
    for path in step_paths(listed, resolve_sampling(listed, None), 4, rng):
        listed.space.validate(path)   # raises for an arch outside the list
    assert resolve_sampling(build_supernet(get_space("nats_sss", resolution=8, num_classes=4)), None) == "sandwich"


def test_fair_sampling_trains_every_choice_of_every_decision_once_per_step() -> None:
    space = get_space("nats_sss", resolution=8, num_classes=4)
    net = build_supernet(space)
    rng = np.random.default_rng(0)
    paths = step_paths(net, "fair", 2, rng)
    assert len(paths) == 8   # nats_sss: 8 widths per layer
    for i, d in enumerate(space.decisions):
        assert sorted(p.genes[i] for p in paths) == sorted(d.choices)
    again = step_paths(net, "fair", 2, rng)
    assert [p.genes for p in again] != [p.genes for p in paths]   # fresh permutations every step
    sandwich = step_paths(net, "sandwich", 2, rng)
    assert sandwich[0] == net.largest() and sandwich[1] == net.smallest() and len(sandwich) == 4
    assert len(step_paths(net, "uniform", 3, rng)) == 3
    nb = get_space("nb201", channels=4, cells=1, resolution=8, num_classes=4)
    nb_paths = step_paths(build_supernet(nb), "fair", 1, rng)
    assert len(nb_paths) == 5 and all(sorted(p.genes[e] for p in nb_paths) == sorted(d.choices)
                                      for e, d in enumerate(nb.decisions))


def test_warmup_then_cosine() -> None:
    assert lr_factor(0, 10, 0) == 1.0
    assert [round(lr_factor(s, 10, 3), 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(10, 10, 3) == pytest.approx(0.0)
    assert lr_factor(0, 1, 5) == 1.0   # one step: no warm-up left to do


def _trained(**kw: object) -> dict[str, torch.Tensor]:
    space = get_space("nats_sss", resolution=8, num_classes=4)
    torch.manual_seed(0)
    net = build_supernet(space)
    train_supernet(net, _data(), SandwichConfig(epochs=1, batch_size=16, random_paths=1, **kw))  # type: ignore[arg-type]
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_optimizer_and_sampling_change_the_training_and_runs_repeat() -> None:
    sgd, adamw, fair = _trained(), _trained(optimizer="adamw", lr=1e-3), _trained(sampling="fair")
    assert all(torch.equal(sgd[k], v) for k, v in _trained().items())   # seeded: the same again
    key = next(k for k, v in sgd.items() if v.dim() == 4)
    assert not torch.equal(sgd[key], adamw[key]) and not torch.equal(sgd[key], fair[key])


@pytest.mark.parametrize("kw, words", [({"optimizer": "adam"}, "valid optimizers: sgd, adamw"),
                                       ({"sampling": "greedy"}, "valid samplings: sandwich, uniform, fair"),
                                       ({"warmup": -1}, "warmup")])
def test_bad_trainer_options_name_the_valid_ones(kw: dict, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        SandwichConfig(**kw)


@pytest.mark.parametrize("opt, words", [("--supernet-optimizer=adam", "valid optimizers: sgd, adamw"),
                                        ("--sampling=best", "valid samplings: sandwich, uniform, fair")])
def test_bench_ranking_refuses_a_bad_choice_in_one_line(opt: str, words: str) -> None:
    r = subprocess.run([sys.executable, "-m", "nas", "bench", "ranking", "--space", "nats_sss", opt],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_search_strategy_refuses_a_bad_optimizer() -> None:
    from nas.strategies.weight_sharing import SupernetStrategy
    with pytest.raises(UsageError, match="valid optimizers"):
        SupernetStrategy(get_space("nats_sss"), optimizer="lamb")


def test_search_cli_refuses_a_bad_sampling_in_one_line() -> None:
    r = subprocess.run([sys.executable, "-m", "nas", "search", "--space", "nats_sss", "--strategy", "supernet",
                        "--dataset", "shapes2:20", "--strategy-option", "sampling=greedy", "--trials", "2", "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "valid samplings: sandwich, uniform, fair" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
