"""Training a weight-sharing strategy's net once per `--out`: reuse its checkpoint, continue its
mid-training state, or train it (`reuse_or_train`), on one process or data parallel (torchrun, Ray:
`dist`); plus the seeded construction and weight inheritance the strategies share
(nas/strategies/weight_sharing.py)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.core.space import SearchSpace

log = logging.getLogger(__name__)


def _seeded(seed: int, build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`build(*args, **kwargs)` with torch's weight initialisation drawn from `seed` (the global torch
    generator is restored afterwards)."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(*args, **kwargs)


def _checkpoint_ok(path: Path | None, meta: dict[str, Any], resume: bool = True) -> bool:
    """True when `path` holds a checkpoint written with exactly `meta`; False when there is none (or
    the search starts over: `resume` False). A resumed search refuses one of another run (space,
    strategy, settings) or an unreadable one with a UsageError, overwriting nothing."""
    if path is None or not path.is_file() or not resume:
        return False
    from nas.training.resume import meta_mismatch, read_state
    bad = meta_mismatch(path, read_state(path)["meta"], meta)
    if bad is not None:
        raise bad
    return True


def reuse_or_train(path: Path | None, meta: dict[str, Any], module: Any,
                   train: Callable[[Any], list[dict[str, Any]]], dist: Any = None, *, resume: bool = True,
                   every: int = 20) -> dict[str, Any]:
    """Load `module` from the checkpoint at `path` if it was written with exactly `meta`, else run
    `train(checkpoint)` (its per-epoch history) and save the checkpoint. Returns the training info.

    `checkpoint` (nas.training.resume.StepCheckpoint at `<path stem>.state.pt`): the trainer writes its
    loop state there every `every` steps and epoch and continues from it when a run was interrupted;
    the file is removed once `path` is written. `resume` False (--no-resume): both files are ignored
    and overwritten.

    Under torchrun (`dist` active) rank 0 decides and every rank follows: a reused checkpoint is
    loaded on rank 0 and broadcast; after training only rank 0 writes it. The world size is part of
    `meta` (BatchNorm sees per-rank batches, so the weights differ a little from one process's)."""
    import nas.training.distributed as D
    from nas.supernet.trainer import load_checkpoint, save_checkpoint
    from nas.training.resume import StepCheckpoint
    dist = dist or D.DistContext()
    if dist.active:
        meta = {**meta, "world_size": dist.world_size}
        path = D.from_main(dist, path)   # only rank 0 has --out; the others must take the same collectives
    D.broadcast_module(dist, module)   # every rank starts from rank 0's weights
    reuse, refused = True, None
    if dist.is_main:
        try:
            reuse = _checkpoint_ok(path, meta, resume)
        except UsageError as exc:   # every rank must hear of it, or the others wait in the next collective
            refused = exc
    if not D.agree(dist, refused is None):
        raise refused or UsageError(f"rank {dist.rank}: rank 0 refused the checkpoint {path} (its message says why)")
    if D.agree(dist, reuse):
        if dist.is_main:
            _, state = load_checkpoint(path)  # type: ignore[arg-type]
            module.load_state_dict(state)
            log.info("reusing %s", path)
        D.broadcast_module(dist, module)
        return {"checkpoint": str(path), "reused": True}
    state_path = path.with_name(path.stem + ".state.pt") if path is not None else None
    if state_path is not None and not resume and state_path.exists() and dist.is_main:
        state_path.unlink()   # --no-resume: start over
    ck = StepCheckpoint(state_path, meta, every, dist)
    history = train(ck)
    info: dict[str, Any] = {"history": history, "seconds": sum(h["seconds"] for h in history)}
    if ck.resumed is not None:
        info["resumed"] = ck.resumed
    if dist.active:
        info["distributed"] = {"world_size": dist.world_size, "backend": dist.backend,
                               "note": "data parallel: global batch split over the ranks, same paths on each"}
    if path is not None and dist.is_main:
        save_checkpoint(path, module, meta)
        info["checkpoint"] = str(path)
        ck.finish()
    return info


def _inherit(net: Any, calib: Any, calib_batches: int, batch_size: int,
             arch: Arch) -> tuple[SearchSpace, dict[str, Any]] | None:
    """`arch`'s weights in a trained supernet, BN statistics recalibrated for its path."""
    if net is None:
        return None
    from nas.supernet.trainer import recalibrate_bn
    small = net.space
    sub = small.validate(Arch(small.name, arch.genes))
    net.set_arch(sub)
    recalibrate_bn(net, calib, calib_batches, batch_size)   # the statistics the evaluator scored it with
    return small, net.extract(sub)
