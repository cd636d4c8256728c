"""ProxylessNAS-style search over any weight-sharing supernet: sampled single paths, arch logits.

ProxylessNAS (Cai et al. 2019, Sec. 3.2-3.3) learns one logit vector per decision and trains the
shared weights on one *sampled* path at a time, so memory stays at one path. Its REINFORCE form
(Sec. 3.2.1) updates the logits from the reward of sampled paths on held-out data, which works for
any supernet whose path is set by ``set_arch`` (mbconv, nasnet, hytra, vit_resnas) - no mixed ops
are needed. Latency enters as in its Sec. 3.3: where the target's LUT is separable per decision, the
expected latency ``const + sum_i sum_j p_ij * LUT[i, j]`` is differentiable in the logits and added
to the loss; elsewhere the sampled path's predicted latency is part of its reward.

Bilevel: a weight step on a batch of the weights half (one path drawn from the current policy), then
an arch step on a batch of the arch half (`paths` draws, moving-average baseline). The penalty is
``lam * max(0, latency / latency_ms - 1)``: zero inside the bound, so a tighter bound pushes harder.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.core.arch import Arch, Gene
from nas.core.errors import NasError, UsageError
from nas.core.space import SearchSpace
from nas.supernet.trainer import batch_indices, flush_denormal

log = logging.getLogger(__name__)
Data = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ProxylessConfig:
    epochs: int = 3
    batch_size: int = 64
    lr: float = 0.05                  # weights: SGD + Nesterov momentum, cosine decay
    arch_lr: float = 0.1              # logits: Adam
    paths: int = 2                    # sampled paths per arch step
    # latency penalty weight: the relative excess is a few percent while the REINFORCE advantages are
    # cross-entropy differences of order 0.1 (lam=2 left the expected latency unmoved on mbconv)
    lam: float = 20.0
    latency_ms: float | None = None   # the bound; None: no latency term
    baseline_decay: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "paths"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"differentiable search needs {name} >= 1, got {getattr(self, name)}")
        if not (self.lr > 0 and self.arch_lr > 0):
            raise UsageError(f"lr and arch_lr must be positive, got {self.lr}, {self.arch_lr}")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise UsageError(f"latency_ms must be positive, got {self.latency_ms}")


class ArchPolicy(nn.Module):
    """One logit per (decision, choice); samples archs the space accepts."""

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        self.logits = nn.ParameterList(nn.Parameter(torch.zeros(len(d.choices))) for d in space.decisions)

    def probs(self) -> list[torch.Tensor]:
        return [lg.softmax(0) for lg in self.logits]

    def _arch(self, genes: list[Gene]) -> Arch:
        canon = getattr(self.space, "canonicalize", None)   # nasnet: any block order is one arch
        return canon(genes) if callable(canon) else self.space.validate(self.space.make(genes))

    def sample(self, rng: np.random.Generator, tries: int = 64) -> tuple[Arch, list[int]]:
        """(arch, choice index per decision) drawn from the policy, rejecting invalid gene lists."""
        probs = [p.detach().cpu().double().numpy() for p in self.probs()]
        for _ in range(tries):
            idx = [int(rng.choice(len(p), p=p / p.sum())) for p in probs]
            try:
                return self._arch([d.choices[i] for d, i in zip(self.space.decisions, idx)]), idx
            except NasError:
                continue
        arch = self.space.sample(rng)     # a policy this peaked on invalid genes: fall back to a valid one
        return arch, [d.choices.index(g) for d, g in zip(self.space.decisions, arch.genes)]

    def log_prob(self, idx: list[int]) -> torch.Tensor:
        return sum(lg.log_softmax(0)[i] for lg, i in zip(self.logits, idx))  # type: ignore[return-value]

    def derive(self, rng: np.random.Generator, feasible: Callable[[Arch], bool] | None = None,
               samples: int = 256) -> Arch:
        """The most probable valid (and, given `feasible`, feasible) arch: the argmax genes if they
        qualify, else the most probable of `samples` policy draws that does."""
        idx = [int(lg.detach().argmax()) for lg in self.logits]
        best: tuple[float, Arch] | None = None
        try:
            arch = self._arch([d.choices[i] for d, i in zip(self.space.decisions, idx)])
            if feasible is None or feasible(arch):
                return arch
        except NasError:
            pass
        for _ in range(samples):
            arch, idx = self.sample(rng)
            if feasible is not None and not feasible(arch):
                continue
            lp = float(self.log_prob(idx).detach())
            if best is None or lp > best[0]:
                best = (lp, arch)
        if best is None:
            raise NasError(f"no arch out of {samples} policy samples meets the latency bound; loosen it")
        return best[1]


class ExpectedLatency:
    """``const + sum_i p_i . LUT[i]`` of a separable LUT model (ms), differentiable in the policy."""

    def __init__(self, lut: Any) -> None:
        matrix = getattr(lut, "_matrix", None)
        if matrix is None:
            raise UsageError(f"latency model {getattr(lut, 'name', lut)!r} is not separable per decision")
        self.rows = [torch.tensor(r[np.isfinite(r)], dtype=torch.float32) for r in matrix]
        self.const = float(lut._const)

    def __call__(self, policy: ArchPolicy) -> torch.Tensor:
        return self.const + sum((p * r.to(p.device)).sum() for p, r in zip(policy.probs(), self.rows))


def penalty(latency: torch.Tensor | float, bound: float | None, lam: float) -> torch.Tensor | float:
    if bound is None:
        return 0.0
    excess = latency / bound - 1.0
    return lam * (F.relu(excess) if isinstance(excess, torch.Tensor) else max(0.0, excess))


def train_proxyless(supernet: Any, policy: ArchPolicy, w_data: Data, a_data: Data, cfg: ProxylessConfig,
                    predict: Callable[[Arch], float] | None, expected: ExpectedLatency | None,
                    dist: Any = None, checkpoint: Any = None) -> list[dict[str, float]]:
    """Alternate weight steps and arch steps for `cfg.epochs`; returns one record per epoch. `dist`
    (nas.training.distributed.DistContext): data parallel - the same batches and paths on every rank, each
    its slice; weight gradients and the arch step's rewards are summed over the ranks. `checkpoint`
    (nas.training.resume.StepCheckpoint): the loop state every N steps and epoch; continued from."""
    import nas.training.distributed as D
    from nas.training.resume import BatchCursor, StepCheckpoint, seen_load, seen_state
    dist = dist or D.DistContext()
    rng = np.random.default_rng([cfg.seed, 0x9A7])
    device = next(supernet.parameters()).device
    params = [p for p in supernet.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=3e-5)
    arch_opt = torch.optim.Adam(policy.parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999))
    steps = cfg.epochs * max(1, len(w_data[1]) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    ck = checkpoint or StepCheckpoint(None, {})
    per_epoch = sum(1 for _ in batch_indices(len(w_data[1]), cfg.batch_size, np.random.default_rng(0)))
    back = ck.attach(rng, cfg.epochs * per_epoch, net=supernet, policy=policy, opt=opt, arch_opt=arch_opt, sched=sched)
    baseline: float | None = back.carry.get("baseline") if back else None
    history: list[dict[str, Any]] = list(back.history) if back else []
    step = back.step if back else 0
    with ck.guard():
        for epoch in range(back.epoch if back else 0, cfg.epochs):
            t0, loss_sum, n_steps, lats, seen = time.perf_counter(), 0.0, 0, [], []
            a_batches = BatchCursor(len(a_data[1]), cfg.batch_size, rng)
            batches = BatchCursor(len(w_data[1]), cfg.batch_size, rng)
            loop = back.loop if back is not None and epoch == back.epoch else None
            if loop is not None:
                batches.load(loop["batches"])
                a_batches.load(loop["a_batches"])
                loss_sum, n_steps, lats = loop["loss_sum"], loop["n_steps"], list(loop["lats"])
                seen, t0 = seen_load(loop["seen"]), t0 - loop["seconds"]
            for idx in batches:
                supernet.train()
                arch, _ = policy.sample(rng)                       # weight step: one path of the policy
                supernet.set_arch(arch)
                a_idx = a_batches.next()
                if a_idx is None:
                    a_batches = BatchCursor(len(a_data[1]), cfg.batch_size, rng)
                    a_idx = a_batches.next()
                part_w, part_a = D.batch_share(dist, idx), D.batch_share(dist, a_idx)
                if part_w is None or part_a is None:
                    continue
                (mine, share), (mine_a, share_a) = part_w, part_a
                with flush_denormal():
                    loss = F.cross_entropy(supernet(w_data[0][mine].to(device)), w_data[1][mine].to(device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    D.average_gradients(dist, params, share)
                    nn.utils.clip_grad_norm_(params, 5.0)
                    opt.step()
                sched.step()
                loss_sum, n_steps = loss_sum + share * float(loss.detach()), n_steps + 1
                seen.append(mine)
                xa, ya = a_data[0][mine_a].to(device), a_data[1][mine_a].to(device)
                arch_loss = torch.zeros(())
                for _ in range(cfg.paths):                           # arch step: REINFORCE on held-out data
                    arch, choice = policy.sample(rng)
                    supernet.set_arch(arch)
                    with torch.no_grad(), flush_denormal():   # the global batch's loss: the same reward on every rank
                        reward = -D.all_sum(dist, [share_a * float(F.cross_entropy(supernet(xa), ya))])[0]
                    if expected is None and predict is not None:   # not separable: latency in the reward
                        reward -= float(penalty(predict(arch), cfg.latency_ms, cfg.lam))
                    baseline = reward if baseline is None else cfg.baseline_decay * baseline + \
                        (1 - cfg.baseline_decay) * reward
                    arch_loss = arch_loss - (reward - baseline) * policy.log_prob(choice) / cfg.paths
                if expected is not None:
                    lat = expected(policy)
                    arch_loss = arch_loss + penalty(lat, cfg.latency_ms, cfg.lam)
                    lats.append(float(lat.detach()))
                arch_opt.zero_grad(set_to_none=True)
                arch_loss.backward()
                arch_opt.step()
                step += 1
                ck.after_step(epoch, step, history, lambda: {  # noqa: B023
                    "batches": batches.state(), "a_batches": a_batches.state(), "loss_sum": loss_sum,  # noqa: B023
                    "n_steps": n_steps, "lats": list(lats), "seen": seen_state(seen),  # noqa: B023
                    "seconds": time.perf_counter() - t0}, {"baseline": baseline})  # noqa: B023
            rec = {"epoch": epoch + 1, "loss": D.all_sum(dist, [loss_sum])[0] / max(1, n_steps),
                   "seconds": time.perf_counter() - t0, **D.epoch_samples(dist, seen)}
            if lats:
                rec["expected_latency_ms"] = lats[-1]
            log.info("differentiable epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in rec.items()})
            history.append(rec)
            ck.save(epoch + 1, step, history, carry={"baseline": baseline})
    return history


__all__ = ["ArchPolicy", "ExpectedLatency", "ProxylessConfig", "penalty", "train_proxyless"]
