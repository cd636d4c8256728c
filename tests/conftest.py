"""Shared fixtures: one torch thread (CI has 2 cores), seeded generators."""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


#: whole modules in the quick subset (`python -m pytest -m quick`, under 60 s CPU): the core types,
#: the layer rules, evolution and the trial stores; single tests elsewhere carry @pytest.mark.quick
QUICK_MODULES = ("test_core.py", "test_architecture.py", "test_evolution.py", "test_store.py")


#: node ids of the slowest tests, measured (tests/slow_tests.txt says how): marked `slow` here, so the
#: default suite stays near 4 minutes of CPU and `python -m pytest -m slow` still runs them
SLOW_TESTS = frozenset(line.split("#")[0].strip() for line in
                       (Path(__file__).with_name("slow_tests.txt")).read_text().splitlines()
                       if line.split("#")[0].strip())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in QUICK_MODULES:
            item.add_marker(pytest.mark.quick)
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="session")
def _nas_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never touch the user's cache and never profile implicitly; `--target cpu` (this machine)
    finds an mbconv table at once: the shipped Xeon one stands in for this machine's."""
    from latency import host_tables
    from latency.targets import TABLES
    root = tmp_path_factory.mktemp("nas_cache")
    old = {k: os.environ.get(k) for k in ("NAS_CACHE_DIR", "NAS_AUTO_PROFILE")}
    os.environ.update(NAS_CACHE_DIR=str(root), NAS_AUTO_PROFILE="0")
    host_tables.host_dir().mkdir(parents=True)
    shutil.copy(TABLES / "xeon-2.8ghz" / "mbconv.json", host_tables.host_dir() / "mbconv.json")
    yield root
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
