"""The process's peak resident memory (what `nas search` reports as `peak_rss_mb`)."""
from __future__ import annotations

import sys


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far in MB (getrusage: Linux reports KB, macOS
    bytes); None where the platform has no getrusage (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
