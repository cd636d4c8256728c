"""The Ray runner: crashes and errors become failed trials, evaluations run in parallel with the
runner's seeds, and `nas search --runner ray` works end to end. One Ray session for the module."""
from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

ray = pytest.importorskip("ray")

from latency.table import LatencyTable  # noqa: E402
from nas.cli.main import main  # noqa: E402
from nas.core.errors import UsageError  # noqa: E402
from nas.pipeline.ray_runner import RayExecutor, run_ray_search  # noqa: E402
from nas.pipeline.runner import run_search, trial_seed  # noqa: E402
from nas.store.study import open_store  # noqa: E402
from nas.strategies.catalog import STRATEGIES  # noqa: E402
from search_spaces.catalog import get_space  # noqa: E402

pytestmark = pytest.mark.ray
SPACE = get_space("mbconv", resolution=32, width_mult=0.25, num_classes=10)
TINY = ["-o", "width_mult=0.25", "-o", "resolution=32", "-o", "num_classes=10"]


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Iterator[None]:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import this test file
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def tiny_table(path: Path) -> Path:
    """A synthetic latency table for the tiny space: cheap searches through the real CLI."""
    table = LatencyTable("mbconv", SPACE.options(), {"device": "synthetic"})
    for i, spec in enumerate(SPACE.all_layers()):
        table.add(spec.key, 0.05 + 0.01 * (i % 7))
    return table.save(path)


def skips(arch: Any) -> int:
    return sum(g == "skip" for g in arch.genes)


class Flaky:
    """Raises for some archs, kills its worker process for others, scores the rest."""

    def __call__(self, arch: Any) -> dict[str, float]:
        if skips(arch) % 7 == 3:
            os._exit(1)
        if skips(arch) % 7 == 5:
            raise RuntimeError(f"boom {skips(arch)}")
        return {"score": float(skips(arch)), "pid": float(os.getpid())}


class Slow:
    def __call__(self, arch: Any) -> dict[str, float]:
        time.sleep(0.25)
        return {"score": float(skips(arch)), "pid": float(os.getpid())}


def test_errors_and_crashes_become_failed_trials(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 't.db'}", "s", space=SPACE)
    trials = run_ray_search(STRATEGIES.get("random")(SPACE, seed=4), Flaky(), 14, store, progress=False,
                            workers=2, max_retries=1)
    by_kind = {k: [t for t in trials if skips(t.arch) % 7 == k] for k in (3, 5)}
    assert by_kind[3] and by_kind[5], "the seed must draw both kinds of bad arch"
    assert all(not t.ok and "WorkerCrashedError" in (t.error or "") and "attempt 2" in (t.error or "")
               for t in by_kind[3])
    assert all(not t.ok and "boom" in (t.error or "") for t in by_kind[5])
    good = [t for t in trials if skips(t.arch) % 7 not in (3, 5)]
    assert good and all(t.ok and t.metrics["score"] == skips(t.arch) for t in good)
    assert len(trials) == 14 and sorted(t.number for t in trials) == list(range(14))
    assert sorted(store.trials(), key=lambda t: t.number) == sorted(trials, key=lambda t: t.number)


def test_parallel_workers_and_runner_seeds() -> None:
    trials = run_ray_search(STRATEGIES.get("random")(SPACE, seed=1), Slow(), 6, progress=False, workers=2)
    assert len({t.metrics["pid"] for t in trials}) == 2          # both workers evaluated
    assert all(t.seed == trial_seed(1, t.number) for t in trials)
    local = run_search(STRATEGIES.get("random")(SPACE, seed=1), Slow(), 6, progress=False)
    assert [t.arch for t in sorted(trials, key=lambda t: t.number)] == [t.arch for t in local]


def test_unpicklable_evaluator_is_a_usage_error() -> None:
    class Locked:
        lock = None

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __call__(self, arch: Any) -> dict[str, float]:
            return {}

    with pytest.raises(UsageError, match="picklable"):
        RayExecutor(Locked(), workers=1)
    with pytest.raises(UsageError, match="--workers"):
        RayExecutor(Slow(), workers=0)


def test_cli_search_on_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = str(tiny_table(tmp_path / "tiny.json"))
    out = tmp_path / "run"
    code = main(["search", "--space", "mbconv", *TINY, "--target", table, "--trials", "6", "--out", str(out),
                 "--runner", "ray", "--workers", "2", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0 and "best of 6 trials" in text
    trials = open_store(f"sqlite:///{out / 'trials.db'}", "run", create=False).trials()
    assert len(trials) == 6 and all(t.ok and t.metrics["score"] > 0 and t.metrics["latency_ms"] > 0 for t in trials)
    assert ray.is_initialized()   # a session it did not start is left running
