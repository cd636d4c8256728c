"""Differentiable architecture search: Single-Path NAS (`single_path`) and DARTS (`darts`)."""
