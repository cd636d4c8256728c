"""Search spaces, one module per space (mbconv, nasnet, hytra, vit_resnas) on the shared op vocabulary
(ops.py and the *_ops.py modules). The registry is `search_spaces.catalog` (`get_space`, `SPACES`).

May import `nas.core` only: nothing here imports latency/ or the engine.
"""
