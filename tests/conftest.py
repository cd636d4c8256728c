"""Shared fixtures: one torch thread (CI has 2 cores), seeded generators."""
from __future__ import annotations

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
