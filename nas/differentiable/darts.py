"""DARTS (Liu et al. 2019) on the `nasnet` space's darts variant.

The search net has the macro structure of `search_spaces.nasnet` (stem conv 3C, normal cells,
reduction cells at 1/3 and 2/3 of the depth, global pool + linear), but every edge of a cell
(node j takes all of h[i-2], h[i-1] and nodes < j as inputs) is a mixed op: the softmax over the
architecture weights alpha of the 8 DARTS primitives (`cell_ops.DARTS_PRIMITIVES`, `none`
included), all built with `cell_ops.build_cell_op`; pools get a BatchNorm too. Every BatchNorm inside
the search cells (ops and preprocessing) is non-affine, as in DARTS' search model (`affine=False`):
a learnable BN scale per op could grow or shrink that op's output and so undo (or fake) its alpha.
The stem keeps its affine BN, as in DARTS. Normal and reduction cells each share one alpha matrix
(edges x ops).

Bilevel optimisation (Sec. 2.3): alternately one Adam step on alpha with the loss of a batch of
the *architecture* half of the training data and one SGD step on the weights with the loss of a
batch of the *weight* half. First order (Eq. 6 with xi = 0) uses the gradient at the current
weights; second order (`order=2`) differentiates through one virtual SGD step of the weights
with the finite-difference Hessian-vector product of Eq. 8.

Derivation (Sec. 2.4): per node, the two incoming edges with the strongest non-`none` op weight,
each taking that op; the genotype becomes an Arch with `NASNetSpace.from_genotype`.
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
from nas.training.loops import step_bar
from nas.supernet.trainer import accuracy, batch_indices, flush_denormal, recalibrate_bn
from search_spaces.cell_ops import DARTS_NAMES, DARTS_PRIMITIVES, build_cell_op, build_preprocess, out_size
from search_spaces.nasnet import STEM_MULTIPLIER, NASNetSpace
from search_spaces.ops import build_layer, conv_spec, head_spec

log = logging.getLogger(__name__)
Data = tuple[torch.Tensor, torch.Tensor]
Genotype = list[tuple[str, int]]


@dataclass(frozen=True)
class DartsConfig:
    epochs: int = 2
    batch_size: int = 64
    lr: float = 0.025                # weights: SGD momentum, cosine to lr_min (DARTS Sec. 3.1.1)
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    arch_lr: float = 3e-3            # Adam(beta 0.5, 0.999); DARTS uses 3e-4 over 50 epochs
    arch_weight_decay: float = 1e-3
    order: int = 1                   # 1: first-order, 2: second-order (unrolled) alpha gradient
    warmup_epochs: int = 0           # epochs that train only the weights before alpha moves (PC-DARTS,
                                     # Xu et al. 2020): untrained convs otherwise lose to parameter-free ops
    grad_clip: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"darts training needs {name} >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise UsageError(f"darts warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}")
        if self.order not in (1, 2):
            raise UsageError(f"darts order must be 1 (first-order) or 2 (second-order), got {self.order}")
        for name in ("lr", "arch_lr"):
            if not getattr(self, name) > 0:
                raise UsageError(f"darts {name} must be positive, got {getattr(self, name)}")


class MixedOp(nn.Module):
    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        ops = []
        for prim in DARTS_PRIMITIVES:
            op = build_cell_op(DARTS_NAMES[prim], c, stride)
            if "pool" in prim:
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))  # type: ignore[return-value]


class SearchCell(nn.Module):
    def __init__(self, steps: int, cpp: int, cp: int, c: int, reduce: bool, reduce_prev: bool) -> None:
        super().__init__()
        self.steps, self.reduce = steps, reduce
        self.pre0 = build_preprocess(cpp, c, 2 if reduce_prev else 1)
        self.pre1 = build_preprocess(cp, c, 1)
        self.edges = nn.ModuleList(MixedOp(c, 2 if reduce and i < 2 else 1)
                                   for j in range(steps) for i in range(2 + j))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = sum(self.edges[offset + i](h, weights[offset + i]) for i, h in enumerate(states))
            offset += len(states)
            states.append(s)  # type: ignore[arg-type]
        return torch.cat(states[2:], dim=1)


def non_affine_bn(module: nn.Module) -> int:
    """Replace every affine BatchNorm2d under `module` by a non-affine one (same features, eps,
    momentum); returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and child.affine:
            setattr(module, name, nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum,
                                                 affine=False))
            count += 1
        else:
            count += non_affine_bn(child)
    return count


class DartsNet(nn.Module):
    """The relaxed (continuous) search net of a darts-variant `NASNetSpace`."""

    def __init__(self, space: NASNetSpace) -> None:
        super().__init__()
        if getattr(space, "variant", None) != "darts":
            raise UsageError(f"darts searches the nasnet space with variant=darts (-o variant=darts); got "
                             f"{space.describe()}")
        self.space = space
        steps, c = space.blocks, space.channels
        r = space.resolution
        self.stem = build_layer(conv_spec(3, STEM_MULTIPLIER * c, 3, 1, (r, r), act="none"))
        cpp = cp = STEM_MULTIPLIER * c
        cells, reduce_prev, hw = [], False, r
        for stage in range(3):
            for i in range(space.cells + (stage > 0)):
                reduce = stage > 0 and i == 0
                if reduce:
                    c, hw = 2 * c, out_size(hw, 2)
                cells.append(SearchCell(steps, cpp, cp, c, reduce, reduce_prev))
                cpp, cp, reduce_prev = cp, steps * c, reduce
        self.cells = nn.ModuleList(cells)
        non_affine_bn(self.cells)
        self.head = build_layer(head_spec(cp, 0, space.num_classes, (hw, hw)))
        n_edges = sum(2 + j for j in range(steps))
        # near-uniform start, drawn like the weights (seed the construction, e.g. with torch.random.fork_rng)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(n_edges, len(DARTS_PRIMITIVES)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(n_edges, len(DARTS_PRIMITIVES)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wn, wr = F.softmax(self.alpha_normal, -1), F.softmax(self.alpha_reduce, -1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, wr if cell.reduce else wn)
        return self.head(s1)

    # ---- derivation --------------------------------------------------------------------------
    @torch.no_grad()
    def genotype(self) -> tuple[Genotype, Genotype]:
        """(normal, reduce): per node the top-2 incoming edges by their best non-`none` weight."""
        none = DARTS_PRIMITIVES.index("none")

        def parse(alpha: torch.Tensor) -> Genotype:
            w = F.softmax(alpha, -1).cpu().numpy()
            out: Genotype = []
            start = 0
            for j in range(self.space.blocks):
                rows = w[start:start + 2 + j]
                best = [max((v, k) for k, v in enumerate(row) if k != none) for row in rows]
                top = sorted(range(len(rows)), key=lambda i: -best[i][0])[:2]
                out += [(DARTS_PRIMITIVES[best[i][1]], i) for i in sorted(top)]
                start += 2 + j
            return out

        return parse(self.alpha_normal), parse(self.alpha_reduce)

    def derive(self, space: NASNetSpace | None = None) -> Arch:
        """The derived genotype as an Arch of `space` (default the search net's own space)."""
        normal, reduce = self.genotype()
        return (space or self.space).from_genotype(normal, reduce)


# ---- bilevel training ----------------------------------------------------------------------------
Sync = Callable[[Sequence[Any], Sequence[torch.Tensor]], Sequence[Any]]


def _same(grads: Sequence[Any], like: Sequence[torch.Tensor]) -> Sequence[Any]:
    return grads


def _second_order_alpha_grad(net: DartsNet, xt: torch.Tensor, yt: torch.Tensor, xv: torch.Tensor,
                             yv: torch.Tensor, xi: float, wd: float, sync_t: Sync = _same,
                             sync_v: Sync = _same) -> None:
    """Set alpha.grad to the unrolled gradient (DARTS Eq. 7-8): grad_a L_val(w', a) -
    xi * (grad_a L_train(w+, a) - grad_a L_train(w-, a)) / (2 eps), with w' = w - xi grad_w L_train.
    `sync_t` / `sync_v` turn this rank's gradients on its slice of the train / val batch into the
    global batch's (data parallel); every intermediate gradient goes through them, so w', eps and
    the result agree on every rank."""
    weights, alphas = net.weight_parameters(), net.arch_parameters()
    backup = [p.detach().clone() for p in weights]
    gw = sync_t(torch.autograd.grad(F.cross_entropy(net(xt), yt), weights, allow_unused=True), weights)
    with torch.no_grad():
        for p, g in zip(weights, gw):
            if g is not None:
                p.sub_(xi * (g + wd * p))
    grads = sync_v(torch.autograd.grad(F.cross_entropy(net(xv), yv), alphas + weights, allow_unused=True),
                   alphas + weights)
    g_alpha, g_w = grads[:len(alphas)], grads[len(alphas):]
    dw = [torch.zeros_like(p) if g is None else g for p, g in zip(weights, g_w)]
    eps = 0.01 / (torch.cat([d.flatten() for d in dw]).norm() + 1e-12)

    def train_alpha_grad(sign: float) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            for p, b, d in zip(weights, backup, dw):
                p.copy_(b + sign * eps * d)
        return tuple(sync_t(torch.autograd.grad(F.cross_entropy(net(xt), yt), alphas), alphas))

    g_plus, g_minus = train_alpha_grad(1.0), train_alpha_grad(-1.0)
    with torch.no_grad():
        for p, b in zip(weights, backup):
            p.copy_(b)
    for a, ga, gp, gm in zip(alphas, g_alpha, g_plus, g_minus):
        a.grad = ga - xi * (gp - gm) / (2 * eps)


def train_darts(net: DartsNet, train_w: Data, train_a: Data, cfg: DartsConfig, val: Data | None = None,
                progress: bool = False, on_epoch: Callable[[dict[str, Any]], None] | None = None,
                dist: Any = None, checkpoint: Any = None) -> list[dict[str, Any]]:
    """Alternate alpha steps (on `train_a`) and weight steps (on `train_w`) for `cfg.epochs`.
    `dist` (nas.training.distributed.DistContext): data parallel - every rank draws the same batches, trains
    on its slice of both, and the alpha and weight gradients are summed over the ranks before each
    step (with `order=2`, every gradient of the unrolled step too). `checkpoint`
    (nas.training.resume.StepCheckpoint): the loop state every N steps and epoch; continued from."""
    from tqdm import tqdm

    from nas.training.resume import BatchCursor, StepCheckpoint, seen_load, seen_state

    import nas.training.distributed as D
    dist = dist or D.DistContext()
    (xw, yw), (xa, ya) = train_w, train_a
    rng = np.random.default_rng([cfg.seed, 0xDA])
    device = next(net.parameters()).device
    weights = net.weight_parameters()
    opt_w = torch.optim.SGD(weights, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                             weight_decay=cfg.arch_weight_decay)
    per_epoch = sum(1 for _ in batch_indices(len(yw), cfg.batch_size, np.random.default_rng(0)))
    steps = max(1, cfg.epochs * per_epoch)
    lr_at = lambda s: cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731
    ck = checkpoint or StepCheckpoint(None, {})
    back = ck.attach(rng, steps, net=net, opt_w=opt_w, opt_a=opt_a)
    history: list[dict[str, Any]] = list(back.history) if back else []
    step = back.step if back else 0
    bar = tqdm(total=steps, initial=step, desc=f"darts search (order {cfg.order})", unit="step",
               disable=not progress or not dist.is_main)
    with flush_denormal(), bar, ck.guard():
        for epoch in range(back.epoch if back else 0, cfg.epochs):
            t0, loss_sum, n_steps, seen, local_sum = time.perf_counter(), 0.0, 0, [], 0.0
            net.train()
            arch_batches = BatchCursor(len(ya), cfg.batch_size, rng)
            batches = BatchCursor(len(yw), cfg.batch_size, rng)
            loop = back.loop if back is not None and epoch == back.epoch else None
            if loop is not None:
                batches.load(loop["batches"])
                arch_batches.load(loop["arch_batches"])
                loss_sum, n_steps, local_sum = loop["loss_sum"], loop["n_steps"], loop["local_sum"]
                seen, t0 = seen_load(loop["seen"]), t0 - loop["seconds"]
            for idx in batches:
                idx_a = arch_batches.next()
                if idx_a is None:
                    arch_batches = BatchCursor(len(ya), cfg.batch_size, rng)
                    idx_a = arch_batches.next()
                part_w, part_a = D.batch_share(dist, idx), D.batch_share(dist, idx_a)
                if part_w is None or part_a is None:
                    continue
                (mine, share), (mine_a, share_a) = part_w, part_a
                xb, yb = xw[mine].to(device), yw[mine].to(device)
                xv, yv = xa[mine_a].to(device), ya[mine_a].to(device)
                lr = lr_at(step)
                for group in opt_w.param_groups:
                    group["lr"] = lr
                if epoch >= cfg.warmup_epochs:   # architecture step
                    opt_a.zero_grad(set_to_none=True)
                    if cfg.order == 2:
                        _second_order_alpha_grad(
                            net, xb, yb, xv, yv, lr, cfg.weight_decay,
                            *((lambda g, p: D.reduce_grads(dist, g, p, share),  # noqa: B023
                               lambda g, p: D.reduce_grads(dist, g, p, share_a))  # noqa: B023
                              if dist.active else ()))
                    else:
                        F.cross_entropy(net(xv), yv).backward(inputs=net.arch_parameters())
                        D.average_gradients(dist, net.arch_parameters(), share_a)
                    opt_a.step()
                # weight step
                opt_w.zero_grad(set_to_none=True)
                loss = F.cross_entropy(net(xb), yb)
                loss.backward(inputs=weights)
                D.average_gradients(dist, weights, share)
                nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
                opt_w.step()
                loss_sum, n_steps = loss_sum + share * float(loss.detach()), n_steps + 1
                seen.append(mine)
                step += 1
                local_sum += float(loss.detach())
                step_bar(bar, loss=local_sum / n_steps)   # this rank's running mean over the epoch so far
                ck.after_step(epoch, step, history, lambda: {  # noqa: B023
                    "batches": batches.state(), "arch_batches": arch_batches.state(),  # noqa: B023
                    "loss_sum": loss_sum, "n_steps": n_steps, "local_sum": local_sum,  # noqa: B023
                    "seen": seen_state(seen), "seconds": time.perf_counter() - t0})  # noqa: B023
            rec: dict[str, Any] = {"epoch": epoch + 1, "loss": D.all_sum(dist, [loss_sum])[0] / max(1, n_steps),
                                   "seconds": time.perf_counter() - t0, **D.epoch_samples(dist, seen),
                                   "arch": net.space.format(net.derive())}
            if val is not None:
                # the search net's BN running statistics lag far behind after a few dozen steps (eval-mode
                # accuracy was chance level): re-estimate them on training batches first
                recalibrate_bn(net, xw, batches=4, batch_size=cfg.batch_size)
                rec["val_acc"] = accuracy(net, *val)
            log.info("darts epoch %d: loss %.4f, %s", epoch + 1, rec["loss"], rec["arch"])
            history.append(rec)
            ck.save(epoch + 1, step, history)
            if on_epoch:
                on_epoch(rec)
    return history


def split_half(data: Data, seed: int) -> tuple[Data, Data]:
    """A seeded 50/50 split of the training data: (weights half, architecture half), as DARTS does."""
    x, y = data
    order = torch.from_numpy(np.random.default_rng([seed, 0x5117]).permutation(len(y)))
    half = len(y) // 2
    a, b = order[:half], order[half:]
    return (x[a], y[a]), (x[b], y[b])
