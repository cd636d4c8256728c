"""Hard budgets (`--constraint`): parsing, peak memory against hand counts, separable tables against
the layer specs, every strategy's result within the bounds, the budget report, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latency.targets import lut_model
from nas.cli.main import main
from nas.core.errors import UsageError
from nas.strategies.constraints import Bound, Budget, arch_metrics, parse_constraint
from search_spaces.catalog import get_space
from search_spaces.memory import peak_memory_mb
from search_spaces.ops import conv_spec, head_spec, mbconv_spec


# ---- parsing -------------------------------------------------------------------------------------
def test_parse_constraint_forms() -> None:
    assert parse_constraint("params_m<=3.5") == Bound("params_m", 3.5)
    assert parse_constraint(" latency_ms[pixel1] <= 80 ") == Bound("latency_ms", 80.0, "pixel1")
    assert parse_constraint("latency_ms[cpu]<=8").key == "latency_ms.cpu"
    assert str(parse_constraint("peak_memory_mb<=4")) == "peak_memory_mb<=4"


@pytest.mark.parametrize("text, says", [
    ("flops<=3", "valid metrics: params_m, macs_m, peak_memory_mb, latency_ms[TARGET]"),
    ("params_m", "malformed"), ("params_m>=3", "only upper bounds"), ("params_m<=x", "not a number"),
    ("latency_ms<=5", "needs its target"), ("macs_m[cpu]<=5", "takes no [target]"), ("params_m<=-1", "positive")])
def test_parse_constraint_errors(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=None) as err:
        parse_constraint(text)
    assert says in str(err.value)


# ---- peak activation memory: hand counts ------------------------------------------------------
def test_peak_memory_hand_count_residual_net() -> None:
    # conv 3->8 at 8x8: 3*64 + 8*64 = 704 floats. MBConv 8->8, e=2, k3, s1 (residual), mid = 16:
    # expand x(512) + mid(1024) = 1536; depthwise 1024 + 1024 + x kept for the add 512 = 2560;
    # project 1024 + 512 + 512 = 2048; add 512 + 512 + 512 = 1536 -> peak 2560 floats = 10240 bytes
    net = [conv_spec(3, 8, 3, 1, (8, 8)), mbconv_spec(8, 8, 3, 2, 1, (8, 8))]
    assert peak_memory_mb(net) == pytest.approx(2560 * 4 / 1e6)


def test_peak_memory_hand_count_strided_net_with_head() -> None:
    # MBConv 4->6, e=3, k3, s2 on 4x8x8 (no residual), mid = 12: expand 256 + 768 = 1024;
    # depthwise 768 + 12*16 = 960; project 192 + 96 = 288. Head 6->10->3 on 6x4x4: conv 96 + 160 = 256,
    # pool 160 + 10, linear 10 + 3 -> peak 1024 floats = 4096 bytes
    net = [mbconv_spec(4, 6, 3, 3, 2, (8, 8)), head_spec(6, 10, 3, (4, 4))]
    assert peak_memory_mb(net) == pytest.approx(1024 * 4 / 1e6)
    assert peak_memory_mb(net[1:]) == pytest.approx(256 * 4 / 1e6)


# ---- separable tables against the layer specs --------------------------------------------------
@pytest.fixture(scope="module")
def mbconv_budget() -> Budget:
    space = get_space("mbconv")
    models = {"pixel1": lut_model("pixel1", space, progress=False)}
    return Budget(space, [Bound("params_m", 3.0), Bound("macs_m", 300.0), Bound("peak_memory_mb", 4.0),
                          Bound("latency_ms", 75.0, "pixel1")], models)


def test_tables_equal_layer_spec_counts(mbconv_budget: Budget) -> None:
    space = mbconv_budget.space
    tables = mbconv_budget.tables()
    assert tables is not None
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = space.sample(rng)
        codes = space.encode(arch)
        m = mbconv_budget.metrics(arch)
        assert tables["params_m"][0](codes)[0] == pytest.approx(m["params_m"], rel=1e-9)
        assert tables["macs_m"][0](codes)[0] == pytest.approx(m["macs_m"], rel=1e-9)
        assert tables["latency_ms.pixel1"][0](codes)[0] == pytest.approx(m["latency_ms.pixel1"], rel=1e-9)
        over = tables["peak_memory_mb"][0](codes)[0] > 0.5
        assert over == (m["peak_memory_mb"] > 4.0)


def test_minimum_is_reached_by_an_arch(mbconv_budget: Budget) -> None:
    space = mbconv_budget.space
    for metric in ("params_m", "macs_m", "peak_memory_mb"):
        fixed, per = mbconv_budget._per_choice(metric)   # type: ignore[misc]
        arch = space.decode(np.array([int(np.argmin(v)) for v in per]))
        low = mbconv_budget.minimum(Bound(metric, 1.0))
        assert arch_metrics(space, arch)[metric] == pytest.approx(low, rel=1e-9)
        # and no random arch goes below it
        rng = np.random.default_rng(1)
        assert min(arch_metrics(space, space.sample(rng))[metric] for _ in range(50)) >= low - 1e-9


def test_projection_meets_every_bound(mbconv_budget: Budget) -> None:
    space = mbconv_budget.space
    big = space.decode(np.array([len(d.choices) - 1 if "skip" not in d.choices else len(d.choices) - 2
                                 for d in space.decisions]))
    assert not mbconv_budget.feasible(big)
    fixed = mbconv_budget.project(big)
    assert fixed is not None and mbconv_budget.feasible(fixed)


def test_greedy_projection_on_a_cell_space() -> None:
    space = get_space("nasnet", variant="darts")
    model = lut_model("pixel1", space, progress=False)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(100)]
    lats = sorted(model.predict(a) for a in archs)
    budget = Budget(space, [Bound("latency_ms", lats[10], "pixel1")], {"pixel1": model})
    slow = max(archs, key=model.predict)
    fixed = budget.project(slow)
    assert fixed is not None and budget.feasible(fixed)
    assert model.predict(fixed) <= lats[10] < model.predict(slow)


# ---- through the CLI ---------------------------------------------------------------------------
def _search(tmp: Path, *extra: str, trials: int = 12) -> tuple[int, str]:
    out = tmp / "s"
    code = main(["search", "--space", "mbconv", "--target", "pixel1", "--trials", str(trials), "--quiet",
                 "--evaluator-option", "proxy=flops", "--out", str(out), *extra])
    return code, str(out)


@pytest.mark.parametrize("strategy", ["evolution", "random", "exact", "tpe"])
def test_every_bound_holds_and_best_json_lists_them(tmp_path: Path, strategy: str) -> None:
    code, out = _search(tmp_path, "--strategy", strategy, "--latency-ms", "80", "--constraint", "params_m<=3",
                        "--constraint", "peak_memory_mb<=4.5", "--constraint", "latency_ms[cpu]<=12",
                        trials=2 if strategy == "exact" else 12)   # exact: one MILP per trial
    assert code == 0
    best = json.loads(Path(out, "best.json").read_text())
    rows = {r["constraint"]: r for r in best["budget"]["constraints"]}
    assert set(rows) == {"params_m<=3", "peak_memory_mb<=4.5", "latency_ms[cpu]<=12", "latency_ms[pixel1]<=80"}
    space = get_space("mbconv")
    arch = space.parse_any(json.dumps(best["arch_json"]))
    truth = arch_metrics(space, arch)
    for r in rows.values():
        assert r["ok"] and r["slack"] == pytest.approx(r["bound"] - r["value"])
    assert rows["params_m<=3"]["value"] == pytest.approx(truth["params_m"])
    assert rows["peak_memory_mb<=4.5"]["value"] == pytest.approx(truth["peak_memory_mb"])
    assert rows["latency_ms[cpu]<=12"]["value"] == pytest.approx(
        lut_model("cpu", space, progress=False).predict(arch))


def test_optuna_sees_the_constraints(tmp_path: Path) -> None:
    import optuna
    code, out = _search(tmp_path, "--constraint", "params_m<=3", "--constraint", "macs_m<=280")
    assert code == 0
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out}/trials.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(len(t.system_attrs["constraints"]) == 2 for t in done)
    space = get_space("mbconv")
    for t in done:   # value - bound: <= 0 feasible, as optuna-dashboard reads them
        m = arch_metrics(space, space.parse_any(json.dumps(t.user_attrs["arch"]))) if "arch" in t.user_attrs else None
        if m is not None:
            assert t.system_attrs["constraints"] == pytest.approx([m["params_m"] - 3, m["macs_m"] - 280])
        assert all(v <= 1e-9 for v in t.system_attrs["constraints"])


@pytest.mark.parametrize("extra, code, says", [
    (("--constraint", "flops<=3"), 2, "unknown metric 'flops'; valid metrics: params_m, macs_m"),
    (("--constraint", "params_m 3"), 2, "malformed"),
    (("--constraint", "latency_ms[nowhere]<=3"), 2, "unknown target 'nowhere'"),
    (("--constraint", "params_m<=0.5"), 1, "the smallest mbconv arch has params_m = 2.155"),
    (("--constraint", "peak_memory_mb<=1"), 1, "the smallest mbconv arch has peak_memory_mb = 3.211"),
    (("--verify", "gpu"), 2, "--verify 'gpu' unknown; valid: cpu"),
])
def test_bad_input_one_line_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            extra: tuple[str, ...], code: int, says: str) -> None:
    got, out = _search(tmp_path, *extra)
    err = capsys.readouterr().err.strip()
    assert got == code and says in err and len(err.splitlines()) == 1
    assert not Path(out).exists()


def test_sampling_strategy_that_finds_no_feasible_arch_names_the_closest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a sliver of the space (the smallest archs) meets both bounds: random sampling finds none
    got, _ = _search(tmp_path, "--strategy", "random", "--latency-ms", "28", "--constraint", "params_m<=2.2",
                     trials=2)
    err = capsys.readouterr().err.strip()
    assert got == 1 and len(err.splitlines()) == 1
    assert "meets params_m<=2.2, latency_ms[pixel1]<=28; closest found: " in err and "(params_m=" in err


def test_no_arch_meets_names_the_closest(mbconv_budget: Budget) -> None:
    from nas.pipeline.budget import no_feasible
    from nas.store.trial import COMPLETE, Trial
    space = mbconv_budget.space
    rng = np.random.default_rng(3)
    archs = [space.sample(rng) for _ in range(30)]
    archs = [a for a in archs if not mbconv_budget.feasible(a)][:5]
    trials = [Trial(i, a, {"score": 1.0}, COMPLETE, None, 0.0, 0) for i, a in enumerate(archs)]
    closest = min(archs, key=mbconv_budget.violation)
    msg = str(no_feasible(mbconv_budget, trials, space))
    assert msg.startswith("no arch met params_m<=3, macs_m<=300, peak_memory_mb<=4, latency_ms[pixel1]<=75 in 5 trials")
    assert f"closest found: {space.format(closest)}" in msg and "\n" not in msg


# ---- projection of weight-sharing results ----------------------------------------------------
class _Derived:
    """What project_derived reads of a weight-sharing strategy: its space, seeds and info."""

    name = "fake"
    fixed_trials = 1

    def __init__(self, space, arch) -> None:  # type: ignore[no-untyped-def]
        self.space, self.seeds, self.info, self.unconstrained = space, [arch], {}, arch


def test_project_derived_moves_an_infeasible_result_and_scores_both(mbconv_budget: Budget) -> None:
    from nas.strategies.enforcement import project_derived
    space = mbconv_budget.space
    big = space.decode(np.array([len(d.choices) - 1 if "skip" not in d.choices else len(d.choices) - 2
                                 for d in space.decisions]))
    s = _Derived(space, big)
    info = project_derived(s, mbconv_budget)
    assert info is not None and not info["unconstrained_feasible"] and info["changed"]
    assert mbconv_budget.feasible(s.seeds[0]) and s.seeds[1] == big and s.fixed_trials == 2
    for key, bound in (("params_m", 3.0), ("macs_m", 300.0), ("peak_memory_mb", 4.0), ("latency_ms.pixel1", 75.0)):
        assert info["projected_values"][key] <= bound
    ok = _Derived(space, s.seeds[0])
    assert project_derived(ok, mbconv_budget)["changed"] == [] and ok.seeds == [s.seeds[0]] and ok.fixed_trials == 1


def test_project_derived_follows_the_architecture_weights(mbconv_budget: Budget) -> None:
    """With log-probabilities, the projection is the most probable feasible arch (exact knapsack)."""
    import torch

    from nas.strategies.enforcement import project_derived
    space = mbconv_budget.space
    rng = np.random.default_rng(0)
    logits = [torch.tensor(rng.normal(size=len(d.choices)) * 3) for d in space.decisions]
    top = space.decode(np.array([int(lg.argmax()) for lg in logits]))
    s = _Derived(space, top)
    s.policy = type("P", (), {"logits": logits})()   # type: ignore[attr-defined]
    info = project_derived(s, mbconv_budget)
    got = s.seeds[0]
    assert mbconv_budget.feasible(got)
    logp = lambda a: sum(float(lg.log_softmax(0)[c]) for lg, c in zip(logits, space.encode(a)))   # noqa: E731
    if info["changed"]:   # no random feasible arch is more probable than the projection
        others = [space.sample(rng) for _ in range(300)]
        assert all(logp(a) <= logp(got) + 1e-9 for a in others if mbconv_budget.feasible(a))


@pytest.mark.slow
@pytest.mark.parametrize("strategy, space_args", [("single-path", ()), ("differentiable", ()),
                                                   ("darts", ("-o", "variant=darts"))])
def test_weight_sharing_results_meet_a_tight_bound(tmp_path: Path, strategy: str, space_args: tuple[str, ...]) -> None:
    from nas.bench.budgets import tight_bound
    space = "nasnet" if strategy == "darts" else "mbconv"
    bound = tight_bound(space, {"variant": "darts"} if space_args else {}, "pixel1", 10.0)
    out = tmp_path / strategy
    extra = ("--strategy-option", "retrain_epochs=1") if strategy == "darts" else ()
    assert main(["search", "--space", space, *space_args, "--target", "pixel1", "--latency-ms", f"{bound:.3f}",
                 "--constraint", "params_m<=6", "--strategy", strategy, "--epochs", "1", "--dataset", "synthetic:32",
                 "--batch-size", "16", "--quiet", "--out", str(out), *extra]) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["budget"]["all_met"] and best["latency_ms"] <= bound + 1e-9
    proj = best["training"]["projection"]
    assert proj["projected_values"]["latency_ms.pixel1"] == pytest.approx(best["latency_ms"])
    assert best["trials"] == 1 + bool(proj["changed"])
