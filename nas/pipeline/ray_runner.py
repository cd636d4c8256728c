"""The Ray runner: the same search loop, with evaluations as Ray tasks on a local or remote cluster.

`RayExecutor` keeps up to `workers` evaluations in flight and hands back each as it completes
(`ray.wait(num_returns=1)`), so the runner tells the strategy and asks for the next one at once.
Each task runs `nas.pipeline.runner.evaluate_trial` with the trial's derived seed, so a failing evaluator
becomes a failed trial exactly as with the local runner. A task whose worker dies (os._exit, a
segfault, SIGKILL, the OOM killer) or that Ray cannot run is evaluated again, up to `max_retries`
times, with every attempt's error kept; after that it is a failed trial. Ray's own task retries are
switched off so that no crash goes unrecorded.

The evaluator is `ray.put` once and unpickled once per worker process (a small cache), so
evaluators holding tables or weights are not shipped with every task.

Ray is imported only here and in nas.cluster (connecting, the watchdog, `nas train --runner ray`); the local
runner never imports either.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

from nas.core.arch import Arch
from nas.core.errors import NasError, UsageError
from nas.evaluators.base import Evaluator
from nas.cluster.ray_session import (AUTH_FIX, _import_ray, _keep_sigterm_handler, _package_dirs, check_reachable,
                                     prepare_connection, start_watchdog, stop_watchdog)
from nas.pipeline.runner import evaluate_trial, run_search
from nas.strategies.base import Strategy
from nas.store.trial import FAILED, Trial, TrialStore

log = logging.getLogger(__name__)
_CACHE: dict[str, Evaluator] = {}   # in each worker process: evaluator object id -> unpickled evaluator


def _evaluate(number: int, arch: Arch, evaluator_ref: list[Any], seed: int) -> Trial:
    """The Ray task body (runs in a worker process)."""
    import ray
    key = evaluator_ref[0].hex()
    evaluator = _CACHE.get(key)
    if evaluator is None:
        evaluator = ray.get(evaluator_ref[0])
        while len(_CACHE) >= 2:   # a worker may serve several searches; keep the newest only
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = evaluator
    return evaluate_trial(number, arch, evaluator, seed)


class RayExecutor:
    """Run evaluations as Ray tasks; a context manager that starts/stops an embedded Ray if needed."""

    def __init__(self, evaluator: Evaluator, workers: int | None = None, address: str | None = None,
                 max_retries: int = 2, num_cpus_per_trial: float = 1.0, verbose: bool = False) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise UsageError(f"--max-retries must be at least 0, got {max_retries}")
        if address:
            check_reachable(address)
        self.ray = ray = _import_ray()
        self.max_retries = max_retries
        self.started = False
        self._watchdog: Any = None
        t0 = time.perf_counter()
        if not ray.is_initialized():
            if address:
                prepare_connection(address)
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": verbose,
                                      "logging_level": logging.INFO if verbose else logging.ERROR}
            try:
                with _keep_sigterm_handler():
                    if address:
                        ray.init(address=address, runtime_env={"py_modules": _package_dirs()}, **kwargs)
                    else:
                        # "local": a Ray of our own, even when RAY_ADDRESS or the file a `ray start` leaves
                        # (/tmp/ray/ray_current_cluster, stale once that cluster is gone) names another
                        ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, **kwargs)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                if address:
                    raise NasError(f"cannot connect to the Ray cluster at --address {address}: {exc} (is it a Ray "
                                   f"GCS address, 'ray start --head' prints it? if it uses token authentication, "
                                   f"{AUTH_FIX})") from None
                raise NasError(f"cannot start Ray here: {exc}") from None
            self.started = True
            if not address:
                self._watchdog = start_watchdog()
        elif address:
            log.warning("Ray is already initialised in this process; --address %s is ignored", address)
        self.startup_seconds = time.perf_counter() - t0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = workers or max(1, int(cpus // max(num_cpus_per_trial, 1e-9)))
        try:
            self._evaluator_ref = ray.put(evaluator)
        except Exception as exc:  # pickling errors come as TypeError, PicklingError, AttributeError ...
            self.close()
            raise UsageError(f"the evaluator cannot be sent to Ray workers ({type(exc).__name__}: {exc}); "
                             f"evaluators must be picklable") from None
        self._task = ray.remote(_evaluate).options(max_retries=0, num_cpus=num_cpus_per_trial)
        # ObjectRef -> (number, arch, seed, attempt, errors, first submit time)
        self._pending: dict[Any, tuple[int, Arch, int, int, list[str], float]] = {}
        log.info("Ray runner: %d workers, %.1f s to start", self.capacity, self.startup_seconds)

    def submit(self, number: int, arch: Arch, seed: int) -> None:
        self._launch(number, arch, seed, 0, [], time.perf_counter())

    def _launch(self, number: int, arch: Arch, seed: int, attempt: int, errors: list[str], t0: float) -> None:
        ref = self._task.remote(number, arch, [self._evaluator_ref], seed)
        self._pending[ref] = (number, arch, seed, attempt, errors, t0)

    def wait(self) -> Trial:
        ray = self.ray
        while True:
            if not self._pending:
                raise RuntimeError("wait() with no evaluation in flight")
            (ref,), _ = ray.wait(list(self._pending), num_returns=1)
            number, arch, seed, attempt, errors, t0 = self._pending.pop(ref)
            try:
                return ray.get(ref)
            except ray.exceptions.RayError as exc:
                msg = str(exc).strip().splitlines()
                errors.append(f"attempt {attempt + 1}: {type(exc).__name__}: {' '.join(msg[:3])[:500]}")
                if attempt < self.max_retries:
                    log.warning("trial %d: worker failed (%s); evaluating again (%d/%d)", number,
                                type(exc).__name__, attempt + 1, self.max_retries)
                    self._launch(number, arch, seed, attempt + 1, errors, t0)
                    continue
                return Trial(number, arch, {}, FAILED, "worker failed on every attempt:\n" + "\n".join(errors),
                             time.perf_counter() - t0, seed)

    def close(self) -> None:
        """Cancel what is still running; stop Ray if this executor started it."""
        for ref in list(getattr(self, "_pending", {})):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished or its worker is gone
                pass
        self._pending = {}
        if self.started:
            self.ray.shutdown()
            self.started = False
        stop_watchdog(getattr(self, "_watchdog", None))
        self._watchdog = None

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_ray_search(strategy: Strategy, evaluator: Evaluator, trials: int, store: TrialStore | None = None,
                   resume: bool = True, progress: bool = True, workers: int | None = None,
                   address: str | None = None, max_retries: int = 2,
                   on_trial: Callable[[Trial], None] | None = None) -> list[Trial]:
    """`run_search` with evaluations on Ray (embedded local Ray unless `address` names a cluster)."""
    verbose = logging.getLogger("nas").isEnabledFor(logging.INFO)
    with RayExecutor(evaluator, workers, address, max_retries, verbose=verbose) as executor:
        return run_search(strategy, evaluator, trials, store, resume=resume, progress=progress,
                          on_trial=on_trial, executor=executor, max_retries=max_retries)
