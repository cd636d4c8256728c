"""`nas train --runner ray --workers N`: the torchrun training (nas.training.retrain) on a Ray cluster.

    nas train runs/p1/best.json --runner ray --workers 4 [--address HOST:6379] --out runs/t

N Ray actors (one CPU each; one GPU each with `--device cuda`) form a torch.distributed group -
gloo on CPUs, NCCL on GPUs, rendezvous at rank 0's node - and each runs `run_training` (nas.api.train) as a
torchrun rank would (RANK, WORLD_SIZE, MASTER_ADDR/PORT set in the actor), so sharding, the global
`--batch-size`, the checks and "only rank 0 writes" are those of `torchrun ... nas train`. Rank 0's
result comes back to the caller. `--out` must be on a filesystem rank 0's node writes to (on one
machine: any folder).

This is what Ray Train's TorchTrainer does underneath; it is built on plain actors because
`ray.train` needs extra packages (pandas, pyarrow) that `ray[default]` does not bring.
"""
from __future__ import annotations

import logging
import os
import socket
from typing import Any

from nas.core.errors import NasError, UsageError

log = logging.getLogger(__name__)


class _Rank:
    """One training process (a Ray actor)."""

    def endpoint(self) -> tuple[str, int]:
        """This node's address and a free port: where the group meets when this is rank 0."""
        import ray
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        return ray.util.get_node_ip_address(), port

    def run(self, rank: int, world: int, master: tuple[str, int], kwargs: dict[str, Any]) -> Any:
        # LOCAL_RANK 0: Ray gives each actor its own GPU (CUDA_VISIBLE_DEVICES), seen as cuda:0
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0", MASTER_ADDR=master[0],
                          MASTER_PORT=str(master[1]))
        from nas.training.retrain import run_training
        return run_training(**kwargs)


def train_on_ray(workers: int, address: str | None = None, **kwargs: Any) -> Any:
    """Run `nas.training.retrain.run_training(**kwargs)` (nas.api.train) on `workers` Ray actors as one
    data-parallel job; returns rank 0's TrainResult. Starts an embedded Ray (`workers` CPUs) unless `address` names a cluster."""
    from nas.cluster.ray_session import _import_ray, _keep_sigterm_handler, _package_dirs, check_reachable
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise UsageError("--runner ray starts its own processes; launch it without torchrun")
    cuda = str(kwargs.get("device", "cpu")).startswith("cuda")
    if address:
        check_reachable(address)
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        try:
            with _keep_sigterm_handler():
                if address:
                    ray.init(address=address, runtime_env={"py_modules": _package_dirs()}, **opts)
                else:   # "local": a new embedded Ray even where `ray start` runs on this machine
                    ray.init(address="local", num_cpus=workers, **opts)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise NasError(f"cannot {'connect to the Ray cluster at ' + address if address else 'start Ray'}: "
                           f"{exc}") from None
    try:
        actor = ray.remote(num_cpus=1, num_gpus=1 if cuda else 0)(_Rank)
        ranks = [actor.remote() for _ in range(workers)]
        master = ray.get(ranks[0].endpoint.remote())
        jobs = [r.run.remote(i, workers, master, kwargs) for i, r in enumerate(ranks)]
        try:
            results = ray.get(jobs)
        except ray.exceptions.RayTaskError as exc:   # our errors keep their class: one line, right exit code
            cause = getattr(exc, "cause", None)
            if isinstance(cause, NasError):
                raise cause from None
            raise NasError(f"a Ray training process failed: {str(exc).splitlines()[-1]}") from None
        return results[0]
    finally:
        if started:
            ray.shutdown()
