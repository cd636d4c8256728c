"""torch's CPU thread count, fixed once for every command and API call that runs torch."""
from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from typing import Any

from nas.core.errors import UsageError


def default_threads() -> int:
    """Half the cores, 1 to 4, shared among the processes torchrun started on this node."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    procs = int(local) if local.isdigit() and int(local) > 0 else 1
    return max(1, min(4, (os.cpu_count() or 1) // 2) // procs)


def set_torch_threads(n: int | None = None) -> int:
    """Fix torch's CPU threads (default: half the cores, 1 to 4). On a busy machine, torch's default
    (all cores) makes its worker threads wait on each other: 30x slower small-net training measured.

    torch is not imported for this: if it is not loaded yet, the count is applied the moment it is,
    so a search that never builds a net (`proxy=flops`) does not pay torch's import (2-10 s here)."""
    if n is not None and n < 1:
        raise UsageError(f"--torch-threads must be at least 1, got {n}")
    n = n or default_threads()
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n
    for finder in [f for f in sys.meta_path if isinstance(f, _WhenTorchLoads)]:
        sys.meta_path.remove(finder)
    sys.meta_path.insert(0, _WhenTorchLoads(n))
    return n


class _WhenTorchLoads(importlib.abc.MetaPathFinder):
    """Finds torch through the other finders and sets its thread count once it has loaded."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torch")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run, threads = spec.loader.exec_module, self.threads

        def exec_module(module: Any) -> None:
            run(module)
            if module.get_num_threads() != threads:
                module.set_num_threads(threads)

        spec.loader.exec_module = exec_module   # type: ignore[method-assign]
        return spec
