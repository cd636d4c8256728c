"""Issue 30 item 2: supernets of nats_sss / nb201, the generated `shapes` task, `nas bench ranking`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nas.bench.ranking import RankingConfig, rank_stats
from nas.core.errors import UsageError
from nas.supernet import SUPERNETS, build_supernet
from nas.supernet.trainer import SandwichConfig, recalibrate_bn, train_supernet
from nas.training.data import load_dataset, parse_spec
from nas.training.shapes import CLASSES, generate
from search_spaces.catalog import get_space


def _check_exact(space, n_archs: int = 3) -> None:  # type: ignore[no-untyped-def]
    """After a little training and per-path BN recalibration, the standalone net with the extracted
    state computes exactly the supernet path's output (eval mode)."""
    torch.manual_seed(0)
    net = build_supernet(space)
    res = space.input_shape[-1]
    x = torch.randn(24, 3, res, res, generator=torch.Generator().manual_seed(1))
    y = torch.arange(24) % space.num_classes
    train_supernet(net, (x, y), SandwichConfig(epochs=1, batch_size=8, random_paths=1))
    rng = np.random.default_rng(3)
    for arch in [net.largest(), net.smallest()] + [space.sample(rng) for _ in range(n_archs)]:
        net.set_arch(arch)
        recalibrate_bn(net, x, batches=2, batch_size=8)
        with torch.no_grad():
            ref = net(x[:6])
        model = space.build(arch)
        model.load_state_dict(net.extract(arch))   # strict: every key of the standalone net is filled
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x[:6]), ref), space.format(arch)


def test_nats_sss_supernet_is_slimmable_and_exact() -> None:
    space = get_space("nats_sss", resolution=8, num_classes=4)
    assert "nats_sss" in SUPERNETS
    net = build_supernet(space)
    assert space.format(net.largest()) == "64:64:64:64:64" and space.format(net.smallest()) == "8:8:8:8:8"
    # one shared tensor per position, at the largest width: a 16-wide path uses the first 16 channels
    stem = next(p for k, p in net.params.items() if k.startswith("0__"))
    assert stem.shape[0] == 64
    small = space.parse("16:8:8:8:8")
    state = net.extract(small)
    first_conv = next(k for k, v in state.items() if v.dim() == 4)
    assert torch.equal(state[first_conv], stem[:16])
    _check_exact(space)


def test_nb201_supernet_has_weights_per_edge_op_and_is_exact() -> None:
    space = get_space("nb201", channels=4, cells=1, resolution=8, num_classes=4)
    net = build_supernet(space)
    assert getattr(net, "sampling") == "fair"   # as `nas bench ranking`'s default (uniform ranked below chance)
    conv3 = space.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")
    conv1 = space.make(["nor_conv_1x1"] * 6)
    a, b = net.extract(conv3), net.extract(conv1)
    key = next(k for k in a if ".edges.0." in k and a[k].dim() == 4)
    assert a[key].shape[-1] == 3 and b[key].shape[-1] == 1   # separate weights per op on the same edge
    _check_exact(space)


def test_recalibration_writes_the_shared_bn_statistics() -> None:
    space = get_space("nats_sss", resolution=8, num_classes=4)
    net = build_supernet(space)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 3 + 1
    net.set_arch(space.parse("8:8:8:8:8"))
    recalibrate_bn(net, x, batches=2, batch_size=8)
    stem_bn = next(bn for k, bn in net.bns.items() if k.startswith("0__"))
    assert float(stem_bn.running_mean[:8].abs().sum()) > 0           # the path's channels were re-estimated
    assert float(stem_bn.running_mean[8:].abs().sum()) == 0.0       # the others untouched (reset)
    assert int(stem_bn.num_batches_tracked) == 2


def test_nb201_supernet_on_a_candidate_list() -> None:
    space = get_space("nb201", channels=4, cells=1, resolution=8, candidates="naslib")
    net = build_supernet(space)
    arch = space.sample(np.random.default_rng(0))
    net.set_arch(arch)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)


# ---- ranking statistics --------------------------------------------------------------------------
def test_rank_stats_against_hand_computed_values() -> None:
    # 5 concordant and 1 discordant pair: tau = (5 - 1) / 6; rho = 1 - 6 * (0 + 1 + 1 + 0) / (4 * 15)
    r = rank_stats([1, 2, 3, 4], [1, 3, 2, 4])
    assert r["kendall"] == pytest.approx(4 / 6) and r["spearman"] == pytest.approx(0.8) and r["n"] == 4
    assert rank_stats([1, 2, 3], [3, 2, 1])["kendall"] == pytest.approx(-1.0)


@pytest.mark.parametrize("field,value", [("archs", 5), ("seeds", 1), ("epochs", 0), ("resolution", 10 ** 6),
                                         ("lr", -1.0), ("space", "mbconv"), ("supernet_seed", -1)])
def test_ranking_config_refuses_bad_values(field: str, value: object) -> None:
    with pytest.raises(UsageError, match=str(value) if field != "space" else "valid spaces"):
        RankingConfig(**{field: value})  # type: ignore[arg-type]


def test_supernet_defaults_per_space_are_resolved_and_overridable() -> None:
    """nb201's supernet defaults to FairNAS sampling for 8 epochs (uniform 4 ranked below chance over 4 seeds),
    nats_sss keeps sandwich (its supernet's own) for 4; the result records what ran; explicit values win."""
    from dataclasses import asdict
    nb = RankingConfig(space="nb201")
    assert (nb.supernet_epochs, nb.sampling) == (8, "fair") and asdict(nb)["sampling"] == "fair"
    assert (RankingConfig(space="nats_sss").supernet_epochs, RankingConfig(space="nats_sss").sampling) == (4, None)
    old = RankingConfig(space="nb201", supernet_epochs=4, sampling="uniform")
    assert (old.supernet_epochs, old.sampling) == (4, "uniform")
    with pytest.raises(UsageError, match="outside"):
        RankingConfig(space="nb201", supernet_epochs=0)


def test_supernet_seed_varies_the_supernet_alone() -> None:
    """`supernet_seed` repeats the supernet on the same archs and data (`seed` also draws those); None is
    `seed`."""
    from nas.bench.ranking import supernet_scores
    base = dict(space="nb201", dataset="shapes:40", archs=10, supernet_epochs=1, calib_batches=1, sampling="uniform")
    a = supernet_scores(RankingConfig(**base), progress=False)
    b = supernet_scores(RankingConfig(**base, supernet_seed=0), progress=False)
    c = supernet_scores(RankingConfig(**base, supernet_seed=1), progress=False)
    loss = [[e["loss"] for e in r["supernet_history"]] for r in (a, b, c)]   # floats: another init, other paths
    assert a["supernet"] == b["supernet"] and loss[0] == loss[1]
    assert sorted(c["supernet"]) == sorted(a["supernet"]) and loss[2] != loss[0]
    assert (a["supernet_settings"]["supernet_seed"], c["supernet_settings"]["supernet_seed"]) == (None, 1)


# ---- the generated task ----------------------------------------------------------------------------
def test_shapes_is_deterministic_per_seed_and_balanced() -> None:
    x1, y1 = generate(60, seed=4)
    x2, y2 = generate(60, seed=4)
    x3, _ = generate(60, seed=5)
    xv, _ = generate(60, seed=4, split=1)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert not np.array_equal(x1, x3) and not np.array_equal(x1, xv)
    assert x1.shape == (60, 3, 32, 32) and x1.dtype == np.float32
    assert np.bincount(y1, minlength=len(CLASSES)).tolist() == [6] * 10
    tr, va = load_dataset("shapes:40", split="train", seed=1), load_dataset("shapes:40", split="val", seed=1)
    assert tr[0].shape == (40, 3, 32, 32) and va[0].shape == (20, 3, 32, 32)


@pytest.mark.parametrize("spec", ["shapes:9", "shapes:50001", "shapes:x", "shapes:-5"])
def test_shapes_sizes_are_bounded(spec: str) -> None:
    with pytest.raises(UsageError, match="shapes:N needs a whole number N in 10..50000"):
        parse_spec(spec)


def test_shapes_is_learnable() -> None:
    """A small conv net learns it at twice chance (10 %) in about 100 steps (3 epochs of 1,000 images)."""
    from search_spaces.catalog import get_space as gs
    from nas.training.loops import train_eval
    tr = load_dataset("shapes:1000", split="train", seed=0, resolution=16)
    va = load_dataset("shapes:1000", split="val", seed=0, resolution=16)
    space = gs("nats_sss", resolution=16)
    torch.manual_seed(0)
    model = space.build(space.parse("16:16:16:16:16"))
    out = train_eval(model, tr, va, epochs=3, batch_size=32, lr=3e-3, seed=0, progress=False, optimizer="adamw")
    assert out["accuracy"] > 0.2


# ---- end to end --------------------------------------------------------------------------------------
def test_bench_ranking_cli_end_to_end(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from nas.cli.main import main
    out = tmp_path / "r.json"
    rc = main(["bench", "ranking", "--space", "nb201", "--dataset", "shapes:40", "--archs", "10", "--epochs", "1",
               "--supernet-epochs", "1", "--quiet", "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["archs"] == 10 and set(r["correlations"]) >= {"ceiling_standalone_seed_vs_seed", "supernet_vs_standalone",
                                                            "supernet_vs_truth"}
    blocks = sorted(r["standalone"])
    seeds = [[r["standalone"][b][s] for b in blocks] for s in range(2)]
    assert r["correlations"]["ceiling_standalone_seed_vs_seed"]["kendall"] == pytest.approx(
        rank_stats(*seeds)["kendall"])
    assert "ceiling_standalone_seed_vs_seed" in capsys.readouterr().out


@pytest.mark.parametrize("space", ["nats_sss", "nb201"])
def test_search_supernet_strategy_from_the_cli(space: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from nas.cli.main import main
    rc = main(["search", "--space", space, "--strategy", "supernet", "--dataset", "shapes:20", "--epochs", "1",
               "--trials", "2", "--out", str(tmp_path / "s"), "--quiet"])
    assert rc == 0 and (tmp_path / "s" / "supernet.pt").is_file()


# ---- resume ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nats_sss", "nb201"])
def test_interrupted_supernet_training_resumes_to_the_uninterrupted_result(tmp_path, name: str) -> None:  # type: ignore[no-untyped-def]
    from nas.training.resume import StepCheckpoint
    from tests.test_ws_resume import Stop, _same_history, tiny
    space = (get_space("nats_sss", resolution=8, num_classes=4) if name == "nats_sss"
             else get_space("nb201", channels=4, cells=1, resolution=8, num_classes=4))

    def run(ck: StepCheckpoint):  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        net = build_supernet(space)
        return train_supernet(net, tiny(48, 8), SandwichConfig(epochs=2, batch_size=16, random_paths=1),
                              checkpoint=ck), net

    whole, net = run(StepCheckpoint(None, {}))
    path, meta = tmp_path / "state.pt", {"run": name}
    with pytest.raises(KeyboardInterrupt):   # saved at steps 2 and 4; step 5 is lost
        run(Stop(path, meta, every=2, at=5))
    ck = StepCheckpoint(path, meta, every=2)
    hist, again = run(ck)
    assert ck.resumed == {"step": 4, "steps": 6, "epoch": 2, "checkpoint": str(path)}
    _same_history(whole, hist)
    for (k, a), (_, b) in zip(net.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
