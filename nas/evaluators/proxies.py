"""Training-free (zero-cost) proxies: score an untrained net from one mini-batch, no training.

Every model proxy is `fn(model, x, y) -> float` (higher = predicted better) and may modify the
model it gets (abs weights, removed BatchNorm, accumulated gradients): callers pass a fresh copy.
Arch proxies (`params`, `flops`) are counted from the arch itself. Which parameters count: the
weights of Conv1d/Conv2d/Linear layers ("prunable" layers, as in Abdelfattah et al. 2021,
"Zero-Cost Proxies for Lightweight NAS"), so the same code scores conv nets and transformer
blocks (qkv/proj/MLP are Linear layers).

References for the definitions:
- synflow: Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
  conserving synaptic flow"; BN disabled as in Abdelfattah et al. 2021.
- snip: Lee et al. 2019, "SNIP: single-shot network pruning based on connection sensitivity".
- grad_norm, fisher (Theis et al. 2018; Turner et al. 2020 "BlockSwap"), jacob_cov (Mellor et al.
  2020, "NAS without training", v1): as collected in Abdelfattah et al. 2021.
- naswot: Mellor et al. 2021 (v2, the log-determinant of the binary-code kernel).
- meco: Jiang et al., NeurIPS 2023, "MeCo: Zero-Shot NAS with One Data and Single Forward Pass via
  Minimum Eigenvalue of Correlation" (sum over layers of the smallest eigenvalue of the Pearson
  correlation matrix between a layer's channels, from one input; no labels, no backward pass) and its
  MeCo_opt (`meco_opt`: groups of 8 channels per layer, scaled by the layer's width).
- swap: Peng et al., ICLR 2024, "SWAP-NAS: Sample-Wise Activation Patterns for Ultra-fast NAS"
  (number of distinct sample-wise ReLU activation patterns over a batch; optionally regularised by
  the parameter count, `swap_regularised`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from nas.core.registry import Registry

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from nas.core.arch import Arch
    from nas.core.space import SearchSpace

ModelProxy = Callable[["nn.Module", "torch.Tensor", "torch.Tensor"], float]
ArchProxy = Callable[["SearchSpace", "Arch"], float]


@dataclass(frozen=True)
class ProxyDef:
    """A registered proxy: exactly one of `model_fn` (needs a built net and a batch) or `arch_fn`
    (counted from the arch). `log_scale`: the raw values span orders of magnitude, so the
    ensemble standardises their logarithm."""

    name: str
    model_fn: ModelProxy | None = None
    arch_fn: ArchProxy | None = None
    log_scale: bool = False
    doc: str = ""


PROXIES: Registry[ProxyDef] = Registry("zero-cost proxy")
#: channels per group of `meco_opt` (the MeCo paper's MeCo_opt samples 8 channels per layer)
MECO_OPT_CHANNELS = 8
_ACTIVATIONS = ("ReLU", "ReLU6", "GELU", "Hardswish", "SiLU", "LeakyReLU")


def _prunable(model: "nn.Module") -> Iterator["nn.Module"]:
    import torch.nn as nn
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            yield m


def _loss_backward(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> None:
    import torch.nn.functional as F
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()


def _log(value: float) -> float:
    return math.log(value) if value > 0 else -math.inf


# ---- synflow --------------------------------------------------------------------------------------
def _linearize(model: "nn.Module") -> None:
    """Replace BatchNorm and pointwise activations by identity, in place.

    BN: with one all-ones input, train-mode BN would zero the signal (and fail on 1x1 maps), so
    synflow is computed without BN (Abdelfattah et al. 2021). Activations: with positive weights
    and a positive input every ReLU is the identity, which makes synflow the path norm of the
    linearised net (Tanaka et al. 2020); a bounded one (ReLU6) would instead clip the flow and
    hide every layer before the last saturated one, so all of them become identity."""
    import torch.nn as nn
    from torch.nn.modules.batchnorm import _BatchNorm
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) or type(child).__name__ in _ACTIVATIONS:
                setattr(parent, name, nn.Identity())


def synflow(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """log of SynFlow: sum over prunable weights of |w * dR/dw|, R = sum of the output of the
    linearised net (see `_linearize`) with all weights made positive, fed one all-ones input, in
    float64.

    Returned as a natural log (same ranking): raw values reach 1e100+ for deep nets; the per-layer
    sums are combined with logsumexp, so only a float64 forward pass that overflows (beyond 1e308)
    gives +inf."""
    import torch
    _linearize(model)
    model.double().eval()  # eval: no dropout; BN is gone, so eval/train otherwise agree
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    model.zero_grad(set_to_none=True)
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=x.device)
    model(ones).sum().backward()
    logs = []
    for m in _prunable(model):
        if m.weight.grad is not None:
            s = float((m.weight.detach() * m.weight.grad).abs().sum())
            if math.isnan(s):
                return -math.inf
            logs.append(_log(s))
    if not logs:
        return -math.inf
    if any(v == math.inf for v in logs):
        return math.inf
    top = max(logs)
    return top if top == -math.inf else top + math.log(sum(math.exp(v - top) for v in logs))


# ---- gradient-based saliencies ------------------------------------------------------------------
def snip(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """SNIP: sum of |w * dL/dw| over prunable weights (connection sensitivity), one batch."""
    import torch
    _loss_backward(model, x, y)
    with torch.no_grad():
        return float(sum(float((m.weight * m.weight.grad).abs().sum())
                         for m in _prunable(model) if m.weight.grad is not None))


def grad_norm(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """Sum over prunable layers of the L2 norm of the loss gradient of the layer's weight."""
    import torch
    _loss_backward(model, x, y)
    with torch.no_grad():
        return float(sum(float(m.weight.grad.norm()) for m in _prunable(model) if m.weight.grad is not None))


def fisher(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """Fisher (Theis et al. 2018): per output channel c of every prunable layer,
    0.5 * mean_batch (sum_positions a * dL/da)^2, summed over channels and layers.
    Channel = dim 1 for conv maps, the last dim for linear layers (tokens count as positions)."""
    import torch
    import torch.nn as nn
    pairs: list[tuple[bool, torch.Tensor, list[torch.Tensor]]] = []

    def hook(m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        if isinstance(out, torch.Tensor) and out.requires_grad:
            grads: list[torch.Tensor] = []
            pairs.append((isinstance(m, nn.Linear), out.detach().clone(), grads))
            out.register_hook(lambda g: grads.append(g.detach()))

    handles = [m.register_forward_hook(hook) for m in _prunable(model)]
    try:
        _loss_backward(model, x, y)
    finally:
        for h in handles:
            h.remove()
    total = 0.0
    for is_linear, act, grads in pairs:
        if not grads:
            continue
        prod = (act * grads[0]).double()
        if is_linear:
            prod = prod.movedim(-1, 1)
        per_channel = prod.reshape(prod.shape[0], prod.shape[1], -1).sum(-1)   # (B, C)
        total += float(0.5 * per_channel.pow(2).mean(0).sum())
    return total


def jacob_cov(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """Jacobian covariance (Mellor et al. 2020 v1): correlation of the input gradients of the
    summed output across the batch; score = -sum(log(l + k) + 1/(l + k)), k = 1e-5, over its
    eigenvalues l. Nets whose inputs get less correlated Jacobians score higher."""
    import torch
    model.zero_grad(set_to_none=True)
    xi = x.detach().clone().requires_grad_(True)
    out = model(xi)
    out.backward(torch.ones_like(out))
    jac = xi.grad.reshape(x.shape[0], -1).double()
    corr = torch.corrcoef(jac)
    if not bool(torch.isfinite(corr).all()):
        return -math.inf  # a constant Jacobian row (dead net): the worst possible score
    eig = torch.linalg.eigvalsh(corr).clamp_min(0.0)
    k = 1e-5
    return -float(torch.sum(torch.log(eig + k) + 1.0 / (eig + k)))


# ---- activation patterns -------------------------------------------------------------------------
def _forward_with_hook(model: Any, x: Any, hook: Any) -> None:
    """One forward pass without gradients, `hook` on the output of every activation (ReLU and kin)."""
    import torch
    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m).__name__ in _ACTIVATIONS]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


def naswot(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """NASWOT (Mellor et al. 2021): log-determinant of the kernel of binary activation codes.
    Nets whose units separate the inputs of a batch into more distinct patterns score higher."""
    import torch
    n = x.shape[0]
    k = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
        codes = (out.detach().reshape(n, -1) > 0).double()
        k.add_(codes @ codes.T + (1 - codes) @ (1 - codes).T)

    _forward_with_hook(model, x, hook)
    sign, logdet = torch.linalg.slogdet(k)
    return float(logdet) if sign > 0 else -math.inf


# ---- MeCo and SWAP ---------------------------------------------------------------------------------
def _min_corr_eigenvalue(fmap: "torch.Tensor") -> float:
    """Smallest eigenvalue of the Pearson correlation matrix of the channels of one feature map
    (C, positions...): channels are the variables, positions the observations. Channels that are
    constant over the positions (no defined correlation) are left out; with fewer than two channels
    left, or fewer positions than channels (a singular matrix), the value is 0."""
    import torch
    m = fmap.reshape(fmap.shape[0], -1).double()
    if m.shape[0] < 2 or m.shape[1] < 2:
        return 0.0
    m = m[m.std(dim=1) > 1e-12]
    if m.shape[0] < 2:
        return 0.0
    corr = torch.corrcoef(m)
    eig = torch.linalg.eigvalsh(corr)
    return max(float(eig[0]), 0.0)


def _meco_opt_layer(fmap: "torch.Tensor", gen: "torch.Generator", k: int = MECO_OPT_CHANNELS) -> float:
    """MeCo_opt of one feature map (C, positions...): the channels, in a seeded random order, are cut into
    groups of `k` (min(k, C)); the mean smallest eigenvalue of the groups' k x k correlation matrices,
    times C / k. A k x k matrix's smallest eigenvalue does not shrink as the layer widens, and the C / k
    factor makes the score grow with width (the paper's scaling of its sampled channels)."""
    import torch
    m = fmap.reshape(fmap.shape[0], -1)
    c = m.shape[0]
    k = min(k, c)
    order = torch.randperm(c, generator=gen)
    groups = [order[s:s + k] for s in range(0, c - k + 1, k)]
    return float(np.mean([_min_corr_eigenvalue(m[g]) for g in groups])) * c / k


def _meco_sum(model: "nn.Module", x: "torch.Tensor", layer: Callable[["torch.Tensor"], float]) -> float:
    """Sum of `layer(feature map of the batch's first input)` over the Conv2d outputs, one forward pass."""
    import torch
    import torch.nn as nn
    total = [0.0]

    def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
        if isinstance(out, torch.Tensor) and out.dim() >= 3:
            total[0] += layer(out.detach()[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            # the one input twice: train-mode BatchNorm sees the same statistics as for the input alone,
            # and a 1x1 map (squeeze-excite) still has two values per channel
            model(x[:1].expand(2, *x.shape[1:]))
    finally:
        for h in handles:
            h.remove()
    return total[0]


def meco(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """MeCo (Jiang et al. 2023): sum over the conv layers of the smallest eigenvalue of the correlation
    matrix of the layer's output channels (`_min_corr_eigenvalue`), for ONE input (the batch's first),
    one forward pass in train mode as initialised. Linear layers are left out: one input gives them one
    position. The smallest eigenvalue of a C x C correlation matrix estimated from P positions falls as C
    grows (for independent channels about (1 - sqrt(C/P))^2, 0 once C >= P), so on a space that varies
    widths (nats_sss) MeCo prefers narrow nets and ranks archs backwards: use `meco_opt` there."""
    return _meco_sum(model, x, _min_corr_eigenvalue)


def meco_opt(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """MeCo_opt (Jiang et al. 2023, the paper's optimised variant): as `meco`, but each layer scores
    groups of 8 sampled channels, scaled by channels / 8 (`_meco_opt_layer`); the channel order is drawn
    from a fixed seed, so a net's score is deterministic."""
    import torch
    gen = torch.Generator().manual_seed(0)
    return _meco_sum(model, x, lambda f: _meco_opt_layer(f, gen))


def swap_patterns(model: "nn.Module", x: "torch.Tensor") -> int:
    """Distinct sample-wise activation patterns: every unit after a pointwise activation (each channel
    at each position of each activation module) gives the bit vector of where it is positive over the
    batch; the result is how many distinct bit vectors occur (at most min(units, 2**batch): with a
    small batch it saturates at 2**batch on large nets, so SWAP wants a larger batch than NASWOT)."""
    import torch
    n = x.shape[0]
    words = (n + 61) // 62   # a pattern is packed into int64 words of 62 bits each
    weights = torch.zeros(words, n, dtype=torch.int64, device=x.device)
    for i in range(n):
        weights[i // 62, i] = 2 ** (i % 62)
    codes: list[Any] = []

    def hook(_m: Any, _i: Any, out: torch.Tensor) -> None:
        bits = (out.detach().reshape(n, -1) > 0).to(torch.int64)
        packed = (weights @ bits).T.contiguous().cpu().numpy()   # (units, words)
        codes.append(np.unique(packed.view(np.dtype((np.void, 8 * words))).ravel()))   # per layer first

    _forward_with_hook(model, x, hook)
    if not codes:
        return 0
    return int(np.unique(np.concatenate(codes)).size)


def swap(model: "nn.Module", x: "torch.Tensor", y: "torch.Tensor") -> float:
    """SWAP score (Peng et al. 2024), unregularised: `swap_patterns` over the batch. Labels unused."""
    return float(swap_patterns(model, x))


def swap_regularised(score: float, params_m: float, mu: float, sigma: float) -> float:
    """SWAP's size regularisation: score * exp(-(params_m - mu)**2 / sigma), params in millions; mu
    sets the model size the search is steered to, sigma how tightly (our reading of Peng et al. 2024:
    a Gaussian of the parameter count multiplies the score)."""
    if sigma <= 0:
        raise ValueError(f"swap sigma must be positive, got {sigma}")
    return score * math.exp(-((params_m - mu) ** 2) / sigma)


# ---- size baselines ------------------------------------------------------------------------------
def params_proxy(space: "SearchSpace", arch: "Arch") -> float:
    """Trainable parameters of the full net (from the space's layer specs; nothing is built)."""
    from search_spaces.op_params import arch_params
    return float(arch_params(space, arch))


def flops_proxy(space: "SearchSpace", arch: "Arch") -> float:
    """Multiply-accumulates of the full-resolution net (from the space's layer specs)."""
    return float(space.macs(arch))


PROXIES.register("synflow", ProxyDef("synflow", model_fn=synflow, doc="log SynFlow (Tanaka et al. 2020)"))
PROXIES.register("snip", ProxyDef("snip", model_fn=snip, log_scale=True, doc="SNIP saliency (Lee et al. 2019)"))
PROXIES.register("grad_norm", ProxyDef("grad_norm", model_fn=grad_norm, log_scale=True, doc="sum of gradient norms"))
PROXIES.register("fisher", ProxyDef("fisher", model_fn=fisher, log_scale=True, doc="Fisher (Theis et al. 2018)"))
PROXIES.register("jacob_cov", ProxyDef("jacob_cov", model_fn=jacob_cov, doc="Jacobian covariance (Mellor et al. 2020)"))
PROXIES.register("naswot", ProxyDef("naswot", model_fn=naswot, doc="NASWOT log-det (Mellor et al. 2021)"))
PROXIES.register("meco", ProxyDef("meco", model_fn=meco, doc="MeCo min eigenvalue of feature correlation (Jiang et al. 2023)"))
PROXIES.register("meco_opt", ProxyDef("meco_opt", model_fn=meco_opt,
                                      doc="MeCo_opt: 8-channel groups, scaled by width (Jiang et al. 2023)"))
PROXIES.register("swap", ProxyDef("swap", model_fn=swap, log_scale=True,
                                  doc="distinct sample-wise activation patterns (Peng et al. 2024)"))
PROXIES.register("params", ProxyDef("params", arch_fn=params_proxy, log_scale=True, doc="parameters of the full net"))
PROXIES.register("flops", ProxyDef("flops", arch_fn=flops_proxy, log_scale=True, doc="MACs at full resolution"))
