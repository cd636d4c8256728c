"""Issue 30: `train_eval`'s remedies for early-training failures (LR warm-up, gradient clipping, weight EMA) and
their RankingConfig fields (bounds, one-line errors, saved results without them, merge refusal)."""
from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from nas.bench.ranking import LEGACY_STANDALONE, RankingConfig
from nas.core.errors import UsageError
from nas.training.loops import WeightEma, evaluate, lr_factor, recalibrate_bn, train_eval

from tests.test_train import TRAIN, VAL, small_net   # the same tiny net and data as train_eval's own tests

ROOT = Path(__file__).resolve().parents[1]

def record_steps(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every AdamW step: the LR used, the global gradient norm seen, and the parameters after the step."""
    seen: list[dict[str, Any]] = []
    step = torch.optim.AdamW.step

    def spy(self: torch.optim.AdamW, *a: Any, **k: Any) -> Any:
        params = [p for g in self.param_groups for p in g["params"]]
        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params
                                                           if p.grad is not None])))
        lr = self.param_groups[0]["lr"]
        out = step(self, *a, **k)
        seen.append({"lr": lr, "grad_norm": norm, "params": {id(p): p.detach().clone() for p in params}})
        return out
    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    return seen


def test_lr_factor_warmup_then_cosine_and_plain_cosine_unchanged() -> None:
    assert [lr_factor(s, 10, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, 4) == 1.0 and lr_factor(7, 10, 4) == pytest.approx(0.5) and lr_factor(10, 10, 4) == 0.0
    # no warm-up: exactly the schedule train_eval always had
    assert all(lr_factor(s, 9, 0) == 0.5 * (1 + math.cos(math.pi * min(s, 9) / 9)) for s in range(12))


def test_train_eval_warms_up_linearly_and_default_has_no_warmup(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_steps(monkeypatch)   # 200 images, batch 50: 4 steps an epoch, 12 steps in all
    train_eval(small_net(), TRAIN, VAL, epochs=3, batch_size=50, lr=0.01, optimizer="adamw", progress=False, warmup=1)
    lrs = [s["lr"] for s in seen]
    assert lrs[:4] == pytest.approx([0.0025, 0.005, 0.0075, 0.01])
    assert lrs[4:] == pytest.approx([0.01 * lr_factor(s, 12, 4) for s in range(4, 12)])
    seen.clear()
    train_eval(small_net(), TRAIN, VAL, epochs=3, batch_size=50, lr=0.01, optimizer="adamw", progress=False)
    assert [s["lr"] for s in seen] == pytest.approx([0.005 * (1 + math.cos(math.pi * s / 12)) for s in range(12)])


def test_clip_grad_bounds_the_gradient_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_steps(monkeypatch)
    train_eval(small_net(), TRAIN, VAL, epochs=2, batch_size=50, lr=0.01, optimizer="adamw", progress=False)
    assert max(s["grad_norm"] for s in seen) > 0.05   # unclipped gradients are larger than the bound below
    seen.clear()
    train_eval(small_net(), TRAIN, VAL, epochs=2, batch_size=50, lr=0.01, optimizer="adamw", progress=False,
               clip_grad=0.05)
    assert len(seen) == 8 and max(s["grad_norm"] for s in seen) <= 0.05 * (1 + 1e-5)


def test_ema_evaluation_uses_the_averaged_weights_with_recalibrated_bn(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = record_steps(monkeypatch)
    net = small_net()
    r = train_eval(net, TRAIN, VAL, epochs=2, batch_size=50, lr=0.01, optimizer="adamw", progress=False, ema=0.5)
    # by hand: update 1 takes the weights, then ema = 0.5 * ema + 0.5 * weights
    ids = [id(p) for p in net.parameters()]
    avg = [seen[0]["params"][i] for i in ids]
    for s in seen[1:]:
        avg = [0.5 * a + 0.5 * s["params"][i] for a, i in zip(avg, ids)]
    for a, p in zip(avg, net.parameters()):
        torch.testing.assert_close(p.detach(), a, rtol=1e-6, atol=1e-6)
    assert not torch.equal(avg[0], seen[-1]["params"][ids[0]])   # not simply the last weights
    # BN statistics are those of the averaged weights, and the accuracy reported is theirs
    other = small_net()
    with torch.no_grad():
        for p, a in zip(other.parameters(), avg):
            p.copy_(a)
    recalibrate_bn(other, TRAIN, batch_size=50, seed=0)
    torch.testing.assert_close(net[1].running_mean, other[1].running_mean)
    torch.testing.assert_close(net[1].running_var, other[1].running_var)
    assert r["accuracy"] == evaluate(other, VAL)[0]


def test_weight_ema_first_updates_are_a_plain_mean() -> None:
    net = nn.Linear(1, 1, bias=False)
    ema = WeightEma(net, 0.9)
    for w in (1.0, 2.0, 3.0):
        with torch.no_grad():
            net.weight.fill_(w)
        ema.update(net)
    # d_1 = 0, d_2 = 1/2, d_3 = 2/3: the mean of 1, 2, 3 (the decay 0.9 only caps d from update 10 on)
    other = copy.deepcopy(net)
    ema.copy_to(other)
    assert float(other.weight.detach()) == pytest.approx(2.0)


@pytest.mark.parametrize("kw, match", [({"warmup": -1}, "warmup must be"), ({"clip_grad": -0.5}, "clip_grad must be"),
                                       ({"ema": 1.0}, "ema must be in"), ({"ema": -0.1}, r"ema must be in \[0, 1\), got -0.1"),
                                       ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0")])
def test_train_eval_bad_protocol_values(kw: dict[str, float], match: str) -> None:
    with pytest.raises(UsageError, match=match) as e:
        train_eval(small_net(), TRAIN, VAL, progress=False, **kw)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kw, text", [({"standalone_warmup": -1}, "--standalone-warmup -1 is outside [0, 100]"),
                                      ({"clip_grad": 101}, "--clip-grad 101 is outside [0, 100]"),
                                      ({"ema": 1.0}, "--ema 1.0 is outside [0, 0.9999]"),
                                      ({"label_smoothing": "0.1"}, "--label-smoothing '0.1' is outside [0, 0.5]")])
def test_ranking_config_bounds_the_protocol_options(kw: dict[str, Any], text: str) -> None:
    with pytest.raises(UsageError) as e:
        RankingConfig(**kw)
    assert str(e.value) == text


def test_defaults_are_the_plain_protocol_and_old_results_still_match() -> None:
    cfg = RankingConfig(dataset="shapes3")
    assert {k: getattr(cfg, k) for k in LEGACY_STANDALONE} == LEGACY_STANDALONE
    old = {k: v for k, v in cfg.standalone_settings().items() if k not in LEGACY_STANDALONE}   # saved before them
    cfg.check_standalone(old, "old")
    with pytest.raises(UsageError, match=r"^old: its stand-alone settings differ from this run's in clip_grad, "
                                         r"standalone_warmup \("):
        RankingConfig(dataset="shapes3", clip_grad=1.0, standalone_warmup=1).check_standalone(old, "old")


def test_merge_refuses_parts_of_another_protocol_and_records_its_own(tmp_path: Path) -> None:
    from nas.bench.proxies import _truth
    table, _ = _truth("nats_sss", "cifar10", 10, 0)
    blocks = sorted(table)
    sup = tmp_path / "sup.json"
    sup.write_text(json.dumps({"supernet": {b: 0.1 * i for i, b in enumerate(blocks)}}))
    settings = RankingConfig(archs=10, standalone_warmup=1).standalone_settings()
    parts = []
    for s in range(2):
        p = tmp_path / f"t{s}.json"
        p.write_text(json.dumps({"standalone": {b: [0.5 + 0.03 * i + 0.01 * s] for i, b in enumerate(blocks)},
                                 "standalone_seeds": [s], "standalone_settings": settings}))
        parts.append(str(p))
    merge = f"--part=merge:{sup},{','.join(parts)}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "supernet_ranking.py"), merge, "--out",
                               str(tmp_path / "m.json"), "archs=10", *extra], capture_output=True, text=True, env=env)
    bad = run()   # the default protocol has no warm-up
    assert bad.returncode != 0 and "merge part 2: its stand-alone settings differ from this run's in " \
                                   "standalone_warmup" in bad.stderr
    good = run("standalone_warmup=1")
    assert good.returncode == 0, good.stderr
    out = json.loads((tmp_path / "m.json").read_text())
    assert out["standalone_settings"]["standalone_warmup"] == 1 and out["config"]["standalone_warmup"] == 1
    assert out["supernet_settings"].startswith("not recorded")   # a part saved before parts recorded them
    # a supernet part records its settings; a merge under other supernet settings is refused, naming them
    sup.write_text(json.dumps({"supernet": {b: 0.1 * i for i, b in enumerate(blocks)}, "supernet_settings":
                               RankingConfig(archs=10, supernet_epochs=6).supernet_settings()}))
    bad = run("standalone_warmup=1")
    assert bad.returncode != 0 and "merge: the supernet part: its supernet settings differ from this run's in " \
                                   "supernet_epochs (supernet_epochs=6 vs 4)" in bad.stderr, bad.stderr
    good = run("standalone_warmup=1", "supernet_epochs=6")
    assert good.returncode == 0, good.stderr
    assert json.loads((tmp_path / "m.json").read_text())["supernet_settings"]["supernet_epochs"] == 6


@pytest.mark.parametrize("opt, words", [("--clip-grad=-1", "--clip-grad -1.0 is outside [0, 100]"),
                                        ("--standalone-warmup=101", "--standalone-warmup 101.0 is outside [0, 100]"),
                                        ("--ema=1", "--ema 1.0 is outside [0, 0.9999]")])
def test_bench_ranking_refuses_bad_protocol_options_in_one_line(opt: str, words: str) -> None:
    r = subprocess.run([sys.executable, "-m", "nas", "bench", "ranking", "--space", "nats_sss", opt], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
