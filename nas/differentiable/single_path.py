"""Single-Path NAS (Stamoulis et al. 2019): one superkernel per layer, choices made by thresholds.

Each searchable MBConv holds the largest kernel and expansion (the `MBConvSupernet` layout). The
choice is encoded in the weights (paper, Sec. 3.1-3.2, Eq. 1-3):

* kernel: the outer ring of the 5x5 depthwise kernel is used iff ``||w_ring||^2 > t_k5``
  (k3 = the inner 3x3); with more kernels, one nested ring per larger kernel;
* expansion: the channels beyond the first ``cin * e3`` are used iff ``||w_{e6 \\ e3}||^2 > t_e6``;
* skip: a skippable layer's whole residual branch is used iff ``||w_{e3}||^2 > t_e3``.

The expansion and skip norms are taken on the inner (smallest-kernel) taps, which every choice keeps,
so each gate is independent of the kernel gates and all five tokens can be read out of a fresh net.

The indicator is exact in the forward pass (so the net trained is always the arch read out) and a
sigmoid of ``(norm - t) / tau`` in the backward pass (straight-through, as the paper's released
code does). Norms are the mean squared weights of a group divided by their value at
initialisation, so thresholds are scale-free (a threshold of 1 = the initial norm).

The latency is differentiable through the same indicators: for layer l, with the kernel and
expansion indicators read as nested Bernoulli variables, its expected latency is
``p_active * sum_{k,e} P(k) P(e) R_l[k, e]`` with ``R_l`` the target's lookup table (Eq. 5-6).
The loss is ``CE + lambda * log(latency)`` (paper, Eq. 7) or, with a target latency T,
``CE + lambda * max(0, log(latency / T))`` - the net is pushed below T and is free above that.
Weights train with SGD; thresholds with plain SGD by default, so each moves in proportion to how
much latency its gate saves (Adam would move all thresholds at the same speed). The arch is read
from the thresholds (`derive`), repaired greedily (closing the least certain gates first) if it
exceeds a hard bound (`nas.differentiable.single_path_repair`).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.core.arch import Arch
from nas.core.errors import UsageError
from nas.supernet.mbconv import MBConvSupernet, SuperMBConv
from nas.training.loops import step_bar
from nas.supernet.trainer import accuracy, batch_indices, flush_denormal
from search_spaces.mbconv import SKIP, MBConvSpace

log = logging.getLogger(__name__)
Data = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class SinglePathConfig:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.1                  # weights: SGD + Nesterov, cosine decay
    momentum: float = 0.9
    weight_decay: float = 3e-5
    arch_lr: float = 0.2             # thresholds: plain SGD (steps proportional to the gradient, see below)
    arch_optimizer: str = "sgd"      # "sgd" | "adam" (Adam's per-threshold normalisation moves every
                                     # threshold at the same speed and loses which gate saves most latency)
    lam: float = 1.0                 # weight of the latency term
    latency_ms: float | None = None  # target T: penalty lam * max(0, log(lat / T)); None: lam * log(lat)
    tau: float = 0.25                # sigmoid temperature of the relaxed indicator (backward pass)
    t_init: float = 0.5              # initial thresholds, in units of the initial group norms (< 1: all on)
    warmup_epochs: int = 0           # epochs that train only the weights (the largest net) first
    grad_clip: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"single-path training needs {name} >= 1, got {getattr(self, name)}")
        for name in ("lr", "arch_lr", "tau"):
            if not getattr(self, name) > 0:
                raise UsageError(f"single-path {name} must be positive, got {getattr(self, name)}")
        if self.lam < 0:
            raise UsageError(f"single-path lam must be >= 0, got {self.lam}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UsageError(f"single-path warmup_epochs must be in [0, epochs={self.epochs}), "
                             f"got {self.warmup_epochs}")
        if self.arch_optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown arch_optimizer {self.arch_optimizer!r}; valid: sgd, adam")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise UsageError(f"single-path latency_ms target must be positive, got {self.latency_ms}")


def indicator(x: torch.Tensor, tau: float) -> torch.Tensor:
    """1[x > 0] in the forward pass, gradient of sigmoid(x / tau) in the backward pass."""
    soft = torch.sigmoid(x / tau)
    return (x > 0).to(x.dtype) + soft - soft.detach()


class Gates(nn.Module):
    """Thresholds of one layer: one per larger kernel ring, one per larger expansion group, one for
    skip (skippable layers only), plus the group norms at initialisation they are measured in."""

    def __init__(self, block: SuperMBConv, t_init: float) -> None:
        super().__init__()
        ks, es = block.kernels, block.expansions
        kmax = block.kmax
        centres = torch.zeros(len(ks), kmax, kmax)
        for j, k in enumerate(ks):
            off = (kmax - k) // 2
            centres[j, off:off + k, off:off + k] = 1.0
        self.register_buffer("centres", centres)
        self.bounds = [block.cin * e for e in es]            # channel count of each expansion
        self.t_k = nn.Parameter(torch.full((len(ks) - 1,), float(t_init)))
        self.t_e = nn.Parameter(torch.full((len(es) - 1,), float(t_init)))
        self.t_s = nn.Parameter(torch.full((1 if block.skippable else 0,), float(t_init)))
        self.register_buffer("ref_k", torch.ones(len(ks) - 1))
        self.register_buffer("ref_e", torch.ones(len(es) - 1))
        self.register_buffer("ref_s", torch.ones(1 if block.skippable else 0))
        with torch.no_grad():
            nk, ne, ns = self.norms(block.dw.weight)
            self.ref_k.copy_(nk)
            self.ref_e.copy_(ne)
            self.ref_s.copy_(ns)

    def ring(self, j: int) -> torch.Tensor:
        """Mask of ring j >= 1: the centre of kernel j minus the centre of kernel j - 1."""
        return self.centres[j] - self.centres[j - 1]

    def kernel(self, w: torch.Tensor, ind_k: torch.Tensor) -> torch.Tensor:
        """The gated superkernel: inner kernel plus each ring times the product of its indicators."""
        mask = self.centres[0]
        c = torch.ones((), dtype=w.dtype, device=w.device)
        for j in range(1, len(self.centres)):
            c = c * ind_k[j - 1]
            mask = mask + c * self.ring(j)
        return w * mask

    def norms(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean squared weights: of each kernel ring, of each extra expansion group and of the first
        group (skip) - each divided by its value at initialisation.

        The expansion and skip groups are measured on the inner taps only (the smallest kernel, which
        every choice keeps), so the three kinds of gate are independent: closing a kernel ring leaves
        the expansion and skip norms where they were. (Measuring them on the ring-gated kernel over the
        full kmax^2 area dropped them to ~0.36 of their start when a 5x5 ring closed, below the initial
        thresholds: k3e6, and k3 on skippable layers, could not be read out of a fresh net.)"""
        rings = [(w * self.ring(j)).pow(2).sum() / (self.ring(j).sum() * w.shape[0])
                 for j in range(1, len(self.centres))]
        inner = w * self.centres[0]
        area = self.centres[0].sum()
        groups = [inner[a:b].pow(2).sum() / ((b - a) * area) for a, b in zip(self.bounds[:-1], self.bounds[1:])]
        first = [inner[:self.bounds[0]].pow(2).sum() / (self.bounds[0] * area)] if self.t_s.numel() else []
        stack = lambda xs: torch.stack(xs) if xs else w.new_zeros(0)  # noqa: E731
        return stack(rings) / self.ref_k, stack(groups) / self.ref_e, stack(first) / self.ref_s

    def margins(self, w: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(kernel, expansion, skip) margins ``norm - t`` (> 0: gate open), each gate on its own group."""
        nk, ne, ns = self.norms(w)
        return nk - self.t_k, ne - self.t_e, ns - self.t_s


class SinglePathNet(MBConvSupernet):
    """The MBConv supernet trained as Single-Path NAS: every forward runs the gated superkernel."""

    def __init__(self, space: MBConvSpace, tau: float = 0.25, t_init: float = 0.5,
                 zero_init_residual: bool = True) -> None:
        if 1 in space.expansions:
            raise UsageError(f"single-path needs expansions > 1 (an expansion of 1 has no expand conv to share); "
                             f"got expansions {list(space.expansions)}")
        super().__init__(space, zero_init_residual)
        self.tau = float(tau)
        self.gates = nn.ModuleList(Gates(b, t_init) for b in self.blocks)
        self.relaxed = True   # forward runs the gated superkernel; False: the path set with set_arch

    def threshold_parameters(self) -> list[nn.Parameter]:
        return [p for g in self.gates for p in (g.t_k, g.t_e, g.t_s)]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.threshold_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def indicators(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per layer (kernel, expansion, skip) straight-through indicators."""
        out = []
        for block, gates in zip(self.blocks, self.gates):
            mk, me, ms = gates.margins(block.dw.weight, self.tau)
            out.append((indicator(mk, self.tau), indicator(me, self.tau), indicator(ms, self.tau)))
        return out

    def _gated_block(self, block: SuperMBConv, gates: Gates, x: torch.Tensor,
                     ind: tuple[torch.Tensor, ...]) -> torch.Tensor:
        ind_k, ind_e, ind_s = ind
        h = F.relu6(block.bn1(block.expand(x)))
        w = gates.kernel(block.dw.weight, ind_k)
        h = F.relu6(block.bn2(F.conv2d(h, w, None, block.stride, block.kmax // 2, 1, w.shape[0])))
        mask = torch.ones(w.shape[0], dtype=h.dtype, device=h.device)
        parts, c = [mask[:gates.bounds[0]]], torch.ones((), dtype=h.dtype, device=h.device)
        for g, (a, b) in enumerate(zip(gates.bounds[:-1], gates.bounds[1:])):
            c = c * ind_e[g]
            parts.append(mask[a:b] * c)
        h = h * torch.cat(parts).view(1, -1, 1, 1)
        y = block.bn3(block.project(h))
        if ind_s.numel():
            y = y * ind_s[0]
        return x + y if block.residual else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.relaxed:
            return super().forward(x)
        x = self.first(self.stem(x))
        for block, gates, ind in zip(self.blocks, self.gates, self.indicators()):
            x = self._gated_block(block, gates, x, ind)
        return self.head(x)

    # ---- read-out ----------------------------------------------------------------------------
    @torch.no_grad()
    def derive(self) -> Arch:
        """The arch the thresholds encode: nested open kernel rings / expansion groups, skip if closed."""
        genes = []
        for block, gates in zip(self.blocks, self.gates):
            mk, me, ms = gates.margins(block.dw.weight, self.tau)
            if ms.numel() and float(ms[0]) <= 0:
                genes.append(SKIP)
                continue
            k = block.kernels[_open_prefix(mk)]
            e = block.expansions[_open_prefix(me)]
            genes.append(f"k{k}e{e}")
        return self.space.make(genes)

    @torch.no_grad()
    def margin_table(self) -> list[dict[str, list[float]]]:
        out = []
        for block, gates in zip(self.blocks, self.gates):
            mk, me, ms = gates.margins(block.dw.weight, self.tau)
            out.append({"kernel": mk.tolist(), "expansion": me.tolist(), "skip": ms.tolist()})
        return out


def _open_prefix(margins: torch.Tensor) -> int:
    n = 0
    for m in margins.tolist():
        if m <= 0:
            break
        n += 1
    return n


class LatencyTerm:
    """Differentiable latency (ms) of the gated net from a LUT: ``const + sum_l E[R_l]``."""

    def __init__(self, space: MBConvSpace, matrix: np.ndarray, const: float) -> None:
        if matrix.shape[0] != len(space.decisions):
            raise UsageError(f"latency matrix has {matrix.shape[0]} rows for {len(space.decisions)} decisions")
        ks, es = space.kernels, space.expansions
        self.grids: list[torch.Tensor] = []
        self.skip: list[float] = []
        for i, d in enumerate(space.decisions):
            grid = [[float(matrix[i, d.choices.index(f"k{k}e{e}")]) for e in es] for k in ks]
            self.grids.append(torch.tensor(grid, dtype=torch.float32))
            self.skip.append(float(matrix[i, d.choices.index(SKIP)]) if SKIP in d.choices else math.nan)
        self.const = float(const)

    @classmethod
    def from_lut(cls, space: MBConvSpace, lut: Any) -> "LatencyTerm":
        """From a `latency.model.LUTModel` of a space with the same decisions (e.g. the full-size space)."""
        if getattr(lut, "_matrix", None) is None:
            raise UsageError(f"latency model {getattr(lut, 'name', lut)!r} is not separable per layer; "
                             f"single-path needs a per-layer lookup table")
        return cls(space, lut._matrix, lut._const)

    @staticmethod
    def _probs(ind: torch.Tensor) -> torch.Tensor:
        """P(choice j) of nested gates: prod_{l<=j} ind_l * (1 - ind_{j+1})."""
        one = torch.ones(1, dtype=ind.dtype, device=ind.device)
        c = torch.cumprod(torch.cat([one, ind]), 0)
        return c - torch.cat([c[1:], ind.new_zeros(1)])

    def __call__(self, indicators: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        total = torch.tensor(self.const)
        for (ik, ie, is_), grid, skip in zip(indicators, self.grids, self.skip):
            grid = grid.to(ik.device)
            lat = self._probs(ik) @ grid @ self._probs(ie)
            if is_.numel():
                lat = is_[0] * lat + (1 - is_[0]) * skip
            total = total.to(lat.device) + lat
        return total


def latency_penalty(lat: torch.Tensor, cfg: SinglePathConfig) -> torch.Tensor:
    if cfg.latency_ms is None:
        return cfg.lam * torch.log(lat)
    return cfg.lam * F.relu(torch.log(lat / cfg.latency_ms))


def train_single_path(net: SinglePathNet, train: Data, latency: LatencyTerm, cfg: SinglePathConfig,
                      val: Data | None = None, progress: bool = False,
                      on_epoch: Callable[[dict[str, Any]], None] | None = None,
                      dist: Any = None, checkpoint: Any = None) -> list[dict[str, Any]]:
    """Jointly train weights (SGD) and thresholds (SGD or Adam) on CE + latency penalty. `dist`
    (nas.training.distributed.DistContext): data parallel - the same batches on every rank, each its slice,
    weight and threshold gradients summed over the ranks (the latency term is the same everywhere).
    `checkpoint` (nas.training.resume.StepCheckpoint): the loop state every N steps and epoch; continued from."""
    from tqdm import tqdm

    from nas.training.resume import BatchCursor, StepCheckpoint, seen_load, seen_state

    import nas.training.distributed as D
    dist = dist or D.DistContext()
    x, y = train
    rng = np.random.default_rng([cfg.seed, 0x5B])
    device = next(net.parameters()).device
    weights = net.weight_parameters()
    opt_w = torch.optim.SGD([{"params": [p for p in weights if p.ndim > 1], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in weights if p.ndim <= 1], "weight_decay": 0.0}],
                            lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    opt_t = (torch.optim.SGD(net.threshold_parameters(), lr=cfg.arch_lr) if cfg.arch_optimizer == "sgd"
             else torch.optim.Adam(net.threshold_parameters(), lr=cfg.arch_lr, betas=(0.0, 0.999)))
    per_epoch = sum(1 for _ in batch_indices(len(y), cfg.batch_size, np.random.default_rng(0)))
    steps = max(1, cfg.epochs * per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt_w, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    net.relaxed = True
    ck = checkpoint or StepCheckpoint(None, {})
    back = ck.attach(rng, steps, net=net, opt_w=opt_w, opt_t=opt_t, sched=sched)
    history: list[dict[str, Any]] = list(back.history) if back else []
    step = back.step if back else 0
    bar = tqdm(total=steps, initial=step, desc="single-path search", unit="step",
               disable=not progress or not dist.is_main)
    every = list(net.parameters())
    with flush_denormal(), bar, ck.guard():
        for epoch in range(back.epoch if back else 0, cfg.epochs):
            t0, ce_sum, lats, seen, local_ce = time.perf_counter(), 0.0, [], [], 0.0
            net.train()
            batches = BatchCursor(len(y), cfg.batch_size, rng)
            loop = back.loop if back is not None and epoch == back.epoch else None
            if loop is not None:
                batches.load(loop["batches"])
                ce_sum, lats, local_ce = loop["ce_sum"], list(loop["lats"]), loop["local_ce"]
                seen, t0 = seen_load(loop["seen"]), t0 - loop["seconds"]
            for idx in batches:
                part = D.batch_share(dist, idx)
                if part is None:
                    continue
                mine, share = part
                seen.append(mine)
                xb, yb = x[mine].to(device), y[mine].to(device)
                opt_w.zero_grad(set_to_none=True)
                opt_t.zero_grad(set_to_none=True)
                ce = F.cross_entropy(net(xb), yb)
                lat = latency(net.indicators())
                search = epoch >= cfg.warmup_epochs
                loss = ce + latency_penalty(lat, cfg) if search else ce
                loss.backward()
                D.average_gradients(dist, every, share)   # the shares sum to 1: the latency term stays whole
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
                opt_w.step()
                if search:
                    opt_t.step()
                sched.step()
                ce_sum += share * float(ce.detach())
                lats.append(float(lat.detach()))
                local_ce += float(ce.detach())
                step_bar(bar, ce=local_ce / len(lats), ms=lats[-1])   # running mean CE, current expected latency
                step += 1
                ck.after_step(epoch, step, history, lambda: {  # noqa: B023
                    "batches": batches.state(), "ce_sum": ce_sum, "lats": list(lats),  # noqa: B023
                    "local_ce": local_ce, "seen": seen_state(seen),  # noqa: B023
                    "seconds": time.perf_counter() - t0})  # noqa: B023
            arch = net.derive()
            rec: dict[str, Any] = {"epoch": epoch + 1, "ce": D.all_sum(dist, [ce_sum])[0] / max(1, len(lats)),
                                   "latency_ms": lats[-1], "seconds": time.perf_counter() - t0,
                                   **D.epoch_samples(dist, seen), "arch": net.space.format(arch)}
            if val is not None:
                rec["val_acc"] = accuracy(net, *val)
            log.info("single-path epoch %d: ce %.4f, latency %.2f ms, %s", epoch + 1, rec["ce"], rec["latency_ms"],
                     rec["arch"])
            history.append(rec)
            ck.save(epoch + 1, step, history)
            if on_epoch:
                on_epoch(rec)
    return history
