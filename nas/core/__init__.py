"""The core data model every other part builds on: Arch, SearchSpace/Decision, LayerSpec, the error
hierarchy, registries and atomic file writes. It imports nothing of ours outside `nas.core`, and no
heavy library at import time (torch, onnxruntime and ray are imported where they are used)."""

__version__ = "0.1.0"
