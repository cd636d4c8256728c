"""What this machine has: the memory available now (for refusing work that cannot fit)."""
from __future__ import annotations

import os


def available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory; None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


__all__ = ["available_bytes"]
