"""Which paths a supernet training step runs, and its learning-rate schedule (`nas.supernet.trainer`).

* "sandwich" (Yu & Huang 2019): largest, smallest and `random_paths` uniform paths; the largest first
  (the in-place distillation teacher).
* "uniform" (Guo et al. 2020, SPOS): `max(1, random_paths)` uniformly sampled paths.
* "fair" (Chu et al. 2021, FairNAS, strict fairness): as many paths as the widest decision has choices;
  every decision's choices are a fresh random permutation over those paths, so each choice of each
  decision is trained exactly once per step (choices of a narrower decision repeat round-robin).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from nas.core.arch import Arch
from nas.core.errors import UsageError

OPTIMIZERS = ("sgd", "adamw")
SAMPLINGS = ("sandwich", "uniform", "fair")


def lr_factor(step: int, steps: int, warmup: int = 0) -> float:
    """The learning-rate multiplier at `step` of `steps`: linear warm-up over `warmup` steps, then cosine to 0."""
    warmup = min(warmup, steps - 1) if steps > 1 else 0
    if step < warmup:
        return (step + 1) / (warmup + 1)
    span = max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))


def resolve_sampling(supernet: Any, sampling: str | None) -> str:
    """`sampling`, or (None) the supernet's own. Fair paths take every choice of every decision, so on a space
    restricted to a candidate list (`-o candidates=naslib`) they leave the list: there the default falls back
    to uniform paths (drawn from the list) and an explicit "fair" is refused in one line."""
    listed = getattr(supernet.space, "_candidates", None)
    if sampling is None:
        own = str(getattr(supernet, "sampling", "sandwich"))
        return "uniform" if own == "fair" and listed is not None else own
    if sampling == "fair" and listed is not None:
        raise UsageError(f"supernet sampling 'fair' trains every choice of every decision, which leaves the "
                         f"candidate list {listed.source}; use sampling=uniform, or search the whole space")
    return sampling


def step_paths(supernet: Any, sampling: str, random_paths: int, rng: np.random.Generator) -> list[Arch]:
    """The paths of one training step under `sampling` (module docstring); for "sandwich" the first is the
    teacher (largest)."""
    space = supernet.space
    if sampling == "uniform":   # Single Path One-Shot: uniformly sampled paths only
        return [space.sample(rng) for _ in range(max(1, random_paths))]
    if sampling == "fair":      # FairNAS strict fairness: each choice of each decision once per step
        width = max(len(d.choices) for d in space.decisions)
        columns = [[d.choices[i % len(d.choices)] for i in rng.permutation(width)] for d in space.decisions]
        return [space.validate(Arch(space.name, [col[k] for col in columns])) for k in range(width)]
    return [supernet.largest(), supernet.smallest()] + [space.sample(rng) for _ in range(random_paths)]


__all__ = ["OPTIMIZERS", "SAMPLINGS", "lr_factor", "resolve_sampling", "step_paths"]
