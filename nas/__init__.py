"""nas: neural architecture search with hardware-latency models.

The Python API is the library functions the CLI calls (see nas/api.py), importable from here:

    from nas import SearchConfig, search
    result = search(SearchConfig(space="mbconv", targets=("pixel1",), latency_ms=(80.0,), trials=50))
    print(result.summary["arch"], result.summary["latency_ms"])

Attributes load lazily, so `import nas` (and `nas.core`) stays fast and torch-free.
"""
from __future__ import annotations

from typing import Any

from nas.core import __version__

__all__ = ["__version__", "SearchConfig", "SearchResult", "search", "resume_config", "show", "export",
           "load_model", "train", "report", "predict_latency", "profile_latency", "list_catalogue"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from nas import api
        return getattr(api, name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
