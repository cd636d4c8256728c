"""Differentiable architecture search: Single-Path NAS (`single_path`), DARTS (`darts`), ProxylessNAS-style (`proxyless`).

May import nas.core, search_spaces, latency, nas.store, nas.deploy, nas.training, nas.cluster and nas.supernet.
"""
