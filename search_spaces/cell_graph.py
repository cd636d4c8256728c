"""A NASNet / DARTS cell as a graph: its canonical form and which of its inputs and cells are used.

A cell is B blocks; block j adds op_a(state a) and op_b(state b), each state 0 (h[i-2]), 1 (h[i-1]) or an
earlier block (2 + k). Relabelling the blocks gives the same net, so `canonical_cell` picks one form per
isomorphism class (pairs sorted, blocks in the smallest topological order); `live_cells` / `used_inputs`
say which cells of a stack feed the output (split from `search_spaces.nasnet`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

Block = tuple[int, str, int, str]          # (input a, op a, input b, op b)
Cell = tuple[Block, ...]


@lru_cache(maxsize=1 << 16)
def canonical_cell(cell: Cell, ops: tuple[str, ...]) -> Cell:
    """The canonical form of `cell`: pairs sorted, blocks in the smallest topological order.

    Greedy with branching on ties: the gene key of the block put at position p depends only on
    the blocks placed before it, so the lexicographic minimum extends a minimal prefix."""
    rank = {o: i for i, o in enumerate(ops)}
    n = len(cell)
    deps = [{x - 2 for x in (b[0], b[2]) if x >= 2} for b in cell]

    def key(old: int, pos: dict[int, int]) -> tuple[int, int, int, int]:
        a, oa, b, ob = cell[old]
        ka = (a if a < 2 else 2 + pos[a - 2], rank[oa])
        kb = (b if b < 2 else 2 + pos[b - 2], rank[ob])
        lo, hi = sorted((ka, kb))
        return (*lo, *hi)

    best: list[tuple[tuple[int, int, int, int], ...]] = []

    def search(pos: dict[int, int], keys: tuple[tuple[int, int, int, int], ...]) -> None:
        if best and keys > best[0][:len(keys)]:
            return
        if len(keys) == n:
            if not best or keys < best[0]:
                best[:] = [keys]
            return
        free = [b for b in range(n) if b not in pos and deps[b] <= pos.keys()]
        cand = {b: key(b, pos) for b in free}
        low = min(cand.values())
        for b in free:
            if cand[b] == low:
                search({**pos, b: len(keys)}, keys + (low,))

    search({}, ())
    return tuple((a, ops[oa], b, ops[ob]) for a, oa, b, ob in best[0])



def live_cells(cells: Sequence[Cell]) -> list[bool]:
    """Which cells feed the output: cell i reads h[i-2] (input 0) and h[i-1] (input 1), the head
    reads the last cell; inputs before the first cell are the stem, which is always live."""
    live = [False] * len(cells)
    if cells:
        live[-1] = True
    for i in range(len(cells) - 1, -1, -1):
        if live[i]:
            for x in used_inputs(cells[i]):
                if i - 2 + x >= 0:
                    live[i - 2 + x] = True
    return live


def used_inputs(cell: Cell) -> set[int]:
    """Which of the two cell inputs (0: h[i-2], 1: h[i-1]) some block reads."""
    return {x for a, _, b, _ in cell for x in (a, b) if x < 2}
