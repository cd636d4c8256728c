"""Data-parallel context for `nas train` under torchrun: ranks, process group, sharding, reductions.

    torchrun --nproc_per_node=2 $(which nas) train best.json --dataset digits --out runs/t

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup` then joins the process group (NCCL on CUDA,
gloo on CPU) and pins each rank to its GPU. Without those variables everything here is a no-op
single process, so the same training code runs both ways. Sharding follows DistributedSampler: one
seeded permutation per epoch, the same on every rank, cut into `world_size` interleaved shards; the
last `n % world_size` samples of the permutation are left out that epoch (different ones each
epoch), so every rank runs the same number of steps and no sample is seen twice in an epoch.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nas.core.errors import NasError, UsageError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: `rank` of `world_size`, its `device`, and whether it joined a group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Only the main rank writes files and shows progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.backend is not None


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {name}={raw!r} must be a whole number (set by torchrun)") from None


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 without torchrun)."""
    return _env_int("WORLD_SIZE", 1)


def check_device(device: str) -> str:
    """`cpu`, `cuda` or `cuda:N`, and CUDA only when this machine has it."""
    import torch
    kind, _, index = str(device).partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise UsageError(f"unknown device {device!r}; valid devices: cpu, cuda, cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine "
                         f"(torch {torch.__version__}, torch.cuda.is_available() is False); use --device cpu")
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices "
                         f"(valid: cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return device


def setup(device: str = "cpu") -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL for CUDA, gloo for CPU)."""
    import torch
    import torch.distributed as dist
    device = check_device(device)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistContext(device=device)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    stop_with_agent()
    cuda = device.startswith("cuda")
    if cuda:
        if local >= torch.cuda.device_count():
            raise UsageError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; "
                             f"start at most that many processes per node")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    backend = "nccl" if cuda else "gloo"
    if not dist.is_available():
        raise NasError("this torch build has no torch.distributed; run with one process")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    log.info("rank %d of %d on %s (%s)", rank, world, device, backend)
    return DistContext(rank, world, local, device, backend)


def stop_with_agent() -> bool:
    """Under torchrun, have the kernel send this rank SIGTERM when its agent (the parent) dies: a
    SIGKILLed agent left both ranks training and writing into --out (PPID 1). SIGTERM stops a rank
    like `kill` does (the last finished epoch is kept). Linux only; returns whether it was set."""
    import ctypes
    import signal
    import sys
    if not sys.platform.startswith("linux") or "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:   # PR_SET_PDEATHSIG = 1
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:   # the agent died before the request: stop now
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def teardown(ctx: DistContext) -> None:
    import torch.distributed as dist
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    import torch.distributed as dist
    if ctx.active:
        dist.barrier()


def shard_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's sample indices for `epoch`, in visiting order (DistributedSampler-style, drop-tail)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise UsageError(f"rank {rank} is not in a world of {world_size}")
    if n < world_size:
        raise UsageError(f"{n} training samples cannot be shared by {world_size} processes")
    perm = np.random.default_rng([seed, epoch, 0xDA7A]).permutation(n)
    usable = n - n % world_size
    return perm[:usable][rank::world_size]


def all_sum(ctx: DistContext, values: Sequence[float]) -> list[float]:
    """Sum `values` over all ranks (float64); the identity on one process."""
    import torch
    import torch.distributed as dist
    if not ctx.active:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def gather_indices(ctx: DistContext, idx: np.ndarray) -> np.ndarray:
    """Every rank's `idx` concatenated (equal lengths); `idx` itself on one process."""
    import torch
    import torch.distributed as dist
    if not ctx.active:
        return idx
    dev = ctx.device if ctx.backend == "nccl" else "cpu"
    mine = torch.as_tensor(idx, dtype=torch.int64, device=dev)
    parts = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    dist.all_gather(parts, mine)
    return torch.cat(parts).cpu().numpy()


def sync_buffers(ctx: DistContext, model: "torch.nn.Module") -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank before evaluating."""
    import torch.distributed as dist
    if ctx.active:
        for b in model.buffers():
            dist.broadcast(b, 0)


# ---- data-parallel weight-sharing trainers (supernet, single-path, darts, differentiable) ----------
# Every rank draws the same global batch and the same paths from one shared seed (the trainers' rng
# is not rank-dependent), takes its slice of the batch, and the gradients are summed over the ranks,
# each weighted by its share of the batch: that is the gradient of the global batch's mean loss, so
# N processes take the steps one process takes (BatchNorm aside: its batch statistics are per rank).
# Not DDP: a sandwich step runs several paths before one optimizer step, DARTS alternates alpha and
# weight updates, and a sampled path leaves most supernet weights without a gradient - explicit
# reductions keep all three exact without DDP's per-backward hooks.
def batch_share(ctx: DistContext, idx: np.ndarray) -> tuple[np.ndarray, float] | None:
    """This rank's slice of the global batch `idx` (every world_size-th sample) and its share of the
    batch; None when the batch cannot give every rank 2 samples (BatchNorm): every rank skips it."""
    if not ctx.active:
        return idx, 1.0
    if len(idx) < 2 * ctx.world_size:
        return None
    mine = idx[ctx.rank::ctx.world_size]
    return mine, len(mine) / len(idx)


def collective_device(ctx: DistContext) -> str:
    return ctx.device if ctx.backend == "nccl" else "cpu"


def average_gradients(ctx: DistContext, params: Sequence["torch.Tensor"], share: float) -> None:
    """Replace each parameter's .grad by the share-weighted sum over ranks (the global batch's
    gradient). A parameter without a gradient on some rank counts as zeros there; one without a
    gradient on every rank keeps None, so the optimizer skips it exactly as one process would
    (weight decay and momentum do not touch the weights a sampled path left out)."""
    import torch
    if not ctx.active:
        return
    params = list(params)
    mask = _present_everywhere(ctx, [p.grad is not None for p in params])
    for p, anywhere in zip(params, mask):
        if anywhere and p.grad is None:
            p.grad = torch.zeros_like(p)
    live = [p for p, anywhere in zip(params, mask) if anywhere]
    for p, g in zip(live, _reduce_flat(ctx, [p.grad for p in live], share)):  # type: ignore[misc]
        p.grad.copy_(g)  # type: ignore[union-attr]


def _present_everywhere(ctx: DistContext, flags: Sequence[bool]) -> list[bool]:
    """For each flag: true on any rank."""
    import torch
    import torch.distributed as dist
    t = torch.tensor([float(f) for f in flags], dtype=torch.float32, device=collective_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [v > 0 for v in t.tolist()]


def _reduce_flat(ctx: DistContext, tensors: Sequence["torch.Tensor"], share: float) -> list["torch.Tensor"]:
    import torch
    import torch.distributed as dist
    if not tensors:
        return []
    dev = collective_device(ctx)
    flat = torch.cat([t.detach().reshape(-1).to(dev) for t in tensors]) * share
    dist.all_reduce(flat)
    out, offset = [], 0
    for t in tensors:
        out.append(flat[offset:offset + t.numel()].view_as(t).to(t.device))
        offset += t.numel()
    return out


def reduce_grads(ctx: DistContext, grads: Sequence["torch.Tensor | None"], like: Sequence["torch.Tensor"],
                 share: float) -> list["torch.Tensor"]:
    """`grads` (of the tensors `like`; None = zeros) summed over ranks with this rank's `share`."""
    import torch
    full = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]
    return _reduce_flat(ctx, full, share) if ctx.active else full


def broadcast_module(ctx: DistContext, module: "torch.nn.Module") -> None:
    """Rank 0's parameters and buffers on every rank (after loading a checkpoint there, say)."""
    import torch.distributed as dist
    if ctx.active:
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def from_main(ctx: DistContext, value: Any) -> Any:
    """Rank 0's `value` (any picklable object) on every rank; `value` itself on one process."""
    import torch.distributed as dist
    if not ctx.active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=collective_device(ctx))
    return box[0]


def agree(ctx: DistContext, ok: bool) -> bool:
    """True when `ok` holds on every rank (a collective: every rank must call it)."""
    import torch
    import torch.distributed as dist
    if not ctx.active:
        return ok
    t = torch.tensor([1.0 if ok else 0.0], device=collective_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return float(t) > 0


def gather_ragged(ctx: DistContext, idx: np.ndarray) -> np.ndarray:
    """Every rank's `idx` (lengths may differ) concatenated; `idx` itself on one process."""
    if not ctx.active:
        return idx
    lengths = [int(v) for v in gather_indices(ctx, np.array([len(idx)]))]
    padded = np.full(max(lengths), -1, dtype=np.int64)
    padded[:len(idx)] = idx
    every = gather_indices(ctx, padded).reshape(ctx.world_size, -1)
    return np.concatenate([row[:n] for row, n in zip(every, lengths)])


def epoch_samples(ctx: DistContext, seen: Sequence[np.ndarray]) -> dict[str, int]:
    """{"samples": training samples of the epoch over all ranks, "distinct": how many differ} -
    equal when no sample was seen twice."""
    every = gather_ragged(ctx, np.concatenate(list(seen)).astype(np.int64) if seen else np.zeros(0, np.int64))
    return {"samples": int(len(every)), "distinct": int(len(np.unique(every)))}
