"""Single-Path NAS's repair: bring a derived arch under a hard latency bound by closing gates.

The thresholds of a trained `SinglePathNet` say how sure each gate is (its margin: normalised weight norm
minus threshold); the arch is moved down one gate at a time, least certain gate first, among the moves that
lower the prediction, so the repair undoes the decisions training was least sure of (split from
`nas.differentiable.single_path`).
"""
from __future__ import annotations

from typing import Callable

from nas.core.arch import Arch
from nas.core.errors import SearchError
from nas.differentiable.single_path import SinglePathNet
from search_spaces.mbconv import SKIP, MBConvSpace


def repair(net: SinglePathNet, arch: Arch, predict: Callable[[Arch], float], bound: float) -> Arch:
    """Close gates, least certain (smallest margin) first, until `predict(arch) <= bound`."""
    space = net.space
    margins = net.margin_table()
    genes = list(arch.genes)
    for _ in range(4 * len(genes) + 1):
        if predict(space.make(genes)) <= bound:
            return space.make(genes)
        best: tuple[float, int, str] | None = None
        for i, (tok, m) in enumerate(zip(genes, margins)):
            for cand, margin in _downgrades(tok, m, space, i):
                if predict(space.make(genes[:i] + [cand] + genes[i + 1:])) < predict(space.make(genes)):
                    if best is None or margin < best[0]:
                        best = (margin, i, cand)
        if best is None:
            break
        genes[best[1]] = best[2]
    raise SearchError(f"single-path result {space.format(arch)!r} cannot be brought under {bound:g} ms by "
                      f"closing gates; loosen --latency-ms")


def _downgrades(token: str, m: dict[str, list[float]], space: MBConvSpace, i: int) -> list[tuple[str, float]]:
    """One-gate-closing neighbours of `token` with the margin of the gate closed."""
    if token == SKIP:
        return []
    k, e = (int(v) for v in token[1:].split("e"))
    ks, es = space.kernels, space.expansions
    out = []
    if ks.index(k) > 0:
        out.append((f"k{ks[ks.index(k) - 1]}e{e}", m["kernel"][ks.index(k) - 1]))
    if es.index(e) > 0:
        out.append((f"k{k}e{es[es.index(e) - 1]}", m["expansion"][es.index(e) - 1]))
    if SKIP in space.decisions[i].choices and m["skip"]:
        out.append((SKIP, m["skip"][0]))
    return out
