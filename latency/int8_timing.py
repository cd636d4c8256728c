"""How int8 tables are timed and validated so that a stored table and a later validation agree.

Found on this 2-core VM (onnxruntime 1.32, one thread, cpu clock, other jobs at load 1-4): the
machine's speed drifts by 25-35% from one minute to the next, and the drift hits whole nets, which are
preempted in most runs of 5-10 ms under load, more than 0.1 ms layers. `nas latency validate` used to
time its 30 nets in groups of 8, one group after the other: the nets of one group then ran 35% slower
against the table than the nets of the next (mbconv, group medians of net / table 0.79, 0.75, 1.03,
0.71), so the measured nets were not comparable with each other. A stored table, profiled in one
interleaved session, ranked them at Spearman 0.61; the layers re-timed in each group shared their
group's drift and so read 0.88. Three stored mbconv tables profiled minutes apart at loads 0.1, 1.0
and 3.3 ranked the same 30 nets alike (Spearman 0.980-0.986 between tables, levels 1.2-1.7x apart):
the table was reproducible, the nets' measurement was not.

So an int8 validation times every sampled net, with every layer they hold and the empty call, in ONE
interleaved group (`validate_grouping`: while nets + layers fit `MAX_SESSIONS`; mbconv has 47
distinct int8 layers, nb201 25), in finer rounds (`INT8_ROUNDS`: 2 timed runs per session per round
at 50 repeats instead of 5), and a net's or layer's time is the median of its per-round medians
(`round_median`): a round that a slow spell hits counts once, not five times. Float validations keep
their groups of 8 and 10 rounds (their figures in the README were made that way).
"""
from __future__ import annotations

from typing import Sequence

from nas.core.lazy import numpy as np  # numpy on first use

from nas.core.errors import UsageError

#: int8 validation: most sessions (empty call + layers + nets) timed in one interleaved group
MAX_SESSIONS = 400
#: int8 validation: round-robin passes (50 repeats: 2 timed runs per session per round)
INT8_ROUNDS = 25
#: float validation defaults (unchanged)
FLOAT_ROUNDS, FLOAT_CHUNK = 10, 8
#: bounds of --rounds (a round runs every session once at least) and --chunk
MAX_ROUNDS, MAX_CHUNK = 1000, 10_000


def round_median(samples: Sequence[float], rounds: int) -> float:
    """Median of the medians of `rounds` consecutive blocks of `samples` (in time order, as
    `latency.profile.time_interleaved` appends them: one block per round). With one round, or
    fewer samples than rounds, the plain median."""
    t = np.asarray(samples, dtype=float)
    if t.ndim != 1 or len(t) == 0:
        raise ValueError(f"round_median needs a non-empty 1-d sequence, got shape {t.shape}")
    if rounds < 1:
        raise ValueError(f"round_median needs rounds >= 1, got {rounds}")
    if rounds == 1 or len(t) < rounds:
        return float(np.median(t))
    return float(np.median([np.median(b) for b in np.array_split(t, rounds)]))


def check_rounds_chunk(rounds: int | None, chunk: int | None) -> None:
    """One-line usage errors for out-of-range --rounds / --chunk (None: the default)."""
    if rounds is not None and not 1 <= rounds <= MAX_ROUNDS:
        raise UsageError(f"--rounds must be between 1 and {MAX_ROUNDS}, got {rounds}")
    if chunk is not None and not 0 <= chunk <= MAX_CHUNK:
        raise UsageError(f"--chunk must be between 0 (all nets in one group) and {MAX_CHUNK}, got {chunk}")


def validate_grouping(int8: bool, nets: int, layers: int, rounds: int | None, chunk: int | None,
                      repeats: int) -> tuple[int, int]:
    """(rounds, chunk) of a validation: what was asked, else the defaults. Int8: all `nets` in one
    group (chunk 0) when they and their `layers` (distinct) fit `MAX_SESSIONS` sessions with the
    empty call, else groups sized to fit; `INT8_ROUNDS` rounds. Float: 10 rounds, groups of 8."""
    check_rounds_chunk(rounds, chunk)
    if not int8:
        return (FLOAT_ROUNDS if rounds is None else rounds), (FLOAT_CHUNK if chunk is None else chunk)
    if rounds is None:
        rounds = min(INT8_ROUNDS, max(1, repeats))
    if chunk is None:
        if 1 + layers + nets <= MAX_SESSIONS:
            chunk = 0
        else:   # nets in groups; each group holds at most its nets' layers (all of them, at worst)
            chunk = max(1, MAX_SESSIONS - 1 - layers) if layers < MAX_SESSIONS - 1 else FLOAT_CHUNK
            chunk = min(chunk, nets)
    return rounds, chunk
