"""`nas train --runner ray --workers N`: the torchrun training (nas.training.retrain) on a Ray cluster;
`nas search --strategy supernet|single-path|darts|differentiable --runner ray --workers N`: the
weight-sharing training of a search, likewise (`run_on_ray` with the search as the target).

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

    def run(self, rank: int, world: int, master: tuple[str, int], target: str, kwargs: dict[str, Any],
            cwd: str | None = None) -> Any:
        # LOCAL_RANK 0: Ray gives each actor its own GPU (CUDA_VISIBLE_DEVICES), seen as cuda:0
        import importlib
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK="0", MASTER_ADDR=master[0],
                          MASTER_PORT=str(master[1]))
        if cwd is not None:   # an embedded Ray: relative paths (--out, datasets) mean the caller's folder
            os.chdir(cwd)
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)(**kwargs)


def train_on_ray(workers: int, address: str | None = None, **kwargs: Any) -> Any:
    """Run `nas.training.retrain.run_training(**kwargs)` (nas.api.train) on `workers` Ray actors as one
    data-parallel job; returns rank 0's TrainResult. Starts an embedded Ray (`workers` CPUs) unless `address` names a cluster."""
    from nas.training.threads import check_threads, check_workers
    check_workers(workers, address)
    check_threads(kwargs.get("torch_threads"))
    cuda = str(kwargs.get("device", "cpu")).startswith("cuda")
    return run_on_ray(workers, address, "nas.training.retrain:run_training", kwargs, cuda)


def run_on_ray(workers: int, address: str | None, target: str, kwargs: dict[str, Any], cuda: bool = False) -> Any:
    """`target` ("module:function") called with `kwargs` on `workers` Ray actors that form one
    torch.distributed group (RANK, WORLD_SIZE, MASTER_ADDR/PORT set as torchrun sets them); returns rank
    0's result. An error of rank 0 is raised as itself (a NasError keeps its class: one line, its exit
    code); the other ranks stop with it."""
    from nas.cluster.ray_session import _import_ray, _keep_sigterm_handler, _package_dirs, check_reachable
    if os.environ.get("WORLD_SIZE", "1") != "1":
        raise UsageError("--runner ray starts its own processes; launch it without torchrun")
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
    actor = ray.remote(num_cpus=1, num_gpus=1 if cuda else 0)(_Rank)
    ranks = [actor.remote() for _ in range(workers)]
    try:
        master = ray.get(ranks[0].endpoint.remote())
        cwd = None if address else os.getcwd()
        jobs = [r.run.remote(i, workers, master, target, kwargs, cwd) for i, r in enumerate(ranks)]
        log.info("%s on %d Ray processes", target, workers)
        try:
            results = [ray.get(job) for job in jobs]   # rank 0 first: its error is the one that says why
        except ray.exceptions.RayTaskError as exc:   # our errors keep their class: one line, right exit code
            cause = getattr(exc, "cause", None)
            if isinstance(cause, NasError):
                raise cause from None
            raise NasError(f"a Ray training process failed: {str(exc).splitlines()[-1]}") from None
        return results[0]
    finally:
        for r in ranks:   # on a cluster the actors outlive this call unless killed
            ray.kill(r)
        if started:
            ray.shutdown()
