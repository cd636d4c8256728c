"""BLAS threads of the search loop: one, whatever the machine.

The ask/tell loop's numpy work (evolution's ridge solves, the GP of `bo` and screened evolution, LUT
gathers) is a stream of small matrix operations; OpenBLAS and MKL start one thread per core for each,
and on a loaded machine those threads spin waiting for cores (measured for issue 26: 45 ridge solves
took 2.1 CPU-s with the default threads, 0.04 with one). `search_blas_threads()` limits the BLAS pools
loaded at that point to `NAS_BLAS_THREADS` threads (default 1) for the duration of the loop and
restores them afterwards; OpenMP pools (torch's) are left to `nas.training.threads`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from nas.core.errors import UsageError

log = logging.getLogger(__name__)
ENV = "NAS_BLAS_THREADS"


def blas_threads() -> int:
    """Threads the search loop's BLAS may use: $NAS_BLAS_THREADS, default 1."""
    text = os.environ.get(ENV, "1").strip()
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"{ENV}={text!r} must be a positive number of threads")
    return n


@contextlib.contextmanager
def search_blas_threads() -> Iterator[None]:
    """Limit the BLAS thread pools to `blas_threads()` inside the block (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:   # pragma: no cover - a dependency; degrade to the library defaults
        log.debug("threadpoolctl missing: BLAS threads not pinned")
        yield
        return
    with ThreadpoolController().limit(limits=blas_threads(), user_api="blas"):
        yield
