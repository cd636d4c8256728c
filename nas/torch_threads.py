"""torch's CPU thread count, fixed once for every command and API call that runs torch."""
from __future__ import annotations

import os

from nas.core.errors import UsageError


def default_threads() -> int:
    """Half the cores, 1 to 4, shared among the processes torchrun started on this node."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    procs = int(local) if local.isdigit() and int(local) > 0 else 1
    return max(1, min(4, (os.cpu_count() or 1) // 2) // procs)


def set_torch_threads(n: int | None = None) -> int:
    """Fix torch's CPU threads (default: half the cores, 1 to 4). On a busy machine, torch's default
    (all cores) makes its worker threads wait on each other: 30x slower small-net training measured."""
    import torch
    if n is not None and n < 1:
        raise UsageError(f"--torch-threads must be at least 1, got {n}")
    n = n or default_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
