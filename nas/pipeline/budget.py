"""The search's budget: `--constraint` bounds planned, reported after the search, verified on this CPU.

    plan_budget(cfg, space, models, bounds)   the Budget (nas.strategies.constraints) of --constraint
                                              and --latency-ms, checked before anything is written
    budget_summary(budget, best, trials)      per bound: predicted value, bound, slack (best.json `budget`)
    no_feasible(budget, trials)               the one-line failure naming the closest arch found
    verify_cpu(space, arch, ...)              export + time the best arch here (thread CPU clock)
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas.core.arch import Arch
from nas.core.errors import SearchError, UsageError
from nas.core.space import SearchSpace
from nas.store.trial import Trial
from nas.strategies.constraints import Budget, make_budget

VERIFY = ("cpu",)


def plan_budget(cfg: Any, space: SearchSpace, models: Mapping[str, Any], bounds: Mapping[str, float],
                progress: bool = False, implied: Mapping[str, float] | None = None) -> Budget:
    """The budget of a search; usage errors for bad constraints, SearchError for impossible ones.
    `implied`: the evaluator's valid bounds (metric -> upper bound), added as constraints."""
    from latency.targets import lut_model
    if cfg.verify is not None and cfg.verify not in VERIFY:
        raise UsageError(f"--verify {cfg.verify!r} unknown; valid: {', '.join(VERIFY)}")

    budget = make_budget(space, cfg.constraints, bounds, models, lambda t: lut_model(t, space, progress), implied)
    budget.check_possible()
    budget.check_jointly_possible()
    return budget


def budget_summary(budget: Budget, best: Trial) -> dict[str, Any]:
    """best.json's `budget`: per bound its predicted value, bound and slack for the best trial."""
    return {"constraints": budget.report(best.metrics), "all_met": budget.feasible(best.arch)}


def projection_scores(info: dict[str, Any], trials: Sequence[Trial], space: SearchSpace) -> None:
    """Add the scores of the projected and unconstrained archs (both are trials) to `info`."""
    by_arch = {space.format(t.arch): t for t in trials if t.ok}
    for key in ("unconstrained", "projected"):
        t = by_arch.get(info.get(key, ""))
        if t is not None:
            info[f"{key}_score"] = t.metrics.get("score")
    a, b = info.get("unconstrained_score"), info.get("projected_score")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        info["score_lost"] = float(a) - float(b)


def no_feasible(budget: Budget, trials: Sequence[Trial], space: SearchSpace) -> SearchError:
    """'no arch met ...; closest found: ...' (the finished trial with the least relative excess)."""
    archs = [t.arch for t in trials]
    closest = budget.closest(archs)
    if closest is None:
        return SearchError(f"no arch met {', '.join(map(str, budget.bounds))}: no trial finished")
    got = budget.metrics(closest)
    over = ", ".join(f"{b.label}={got[b.key]:.4g}" for b in budget.bounds)
    return SearchError(f"no arch met {', '.join(map(str, budget.bounds))} in {len(trials)} trials; closest found: "
                       f"{space.format(closest)} ({over})")


def verify_cpu(space: SearchSpace, arch: Arch, out: Path | None, predicted: Mapping[str, float],
               bounds: Mapping[str, float], repeats: int = 30, warmup: int = 5) -> dict[str, Any]:
    """Export `arch` (random weights: latency does not depend on them) to ONNX and time it in
    onnxruntime on this machine, one intra-op thread, with the thread CPU clock: median and spread
    of `repeats` runs, beside the predicted latency of the `cpu` target and its bound (if any)."""
    import tempfile

    import numpy as np
    import onnxruntime as ort

    from nas.deploy.export import export_onnx
    folder = out if out is not None else Path(tempfile.mkdtemp(prefix="nas-verify-"))
    path, _ = export_onnx(space, arch, folder / "verify.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal((1, *space.input_shape)).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        sess.run(None, {inp.name: x})
        times.append((time.thread_time() - t0) * 1e3)
    ms = np.asarray(times)
    row: dict[str, Any] = {"device": "cpu", "onnx": str(path), "clock": "thread CPU time (time.thread_time)",
                           "threads": 1, "repeats": repeats, "measured_ms": float(np.median(ms)),
                           "p10_ms": float(np.percentile(ms, 10)), "p90_ms": float(np.percentile(ms, 90)),
                           "predicted_ms": predicted.get("cpu"), "bound_ms": bounds.get("cpu")}
    b = row["bound_ms"]
    row["meets_bound"] = None if b is None else bool(row["measured_ms"] <= b)
    p = row["predicted_ms"]
    row["measured_over_predicted"] = None if not p else row["measured_ms"] / p
    if math.isnan(row["measured_ms"]):
        raise SearchError("--verify cpu: the timing returned no value")
    return row
