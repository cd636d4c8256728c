"""Deployable files: best.json, PyTorch and ONNX exports of an arch, and loading them back.

May import nas.core, search_spaces and latency; the trainers, the search pipeline and the API export through it.
"""
