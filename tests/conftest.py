"""Shared pytest set-up: the ``slow`` marker.

Tests marked ``@pytest.mark.slow`` are skipped unless ``NAS_SLOW=1`` is set (CI
runs the fast suite; run ``NAS_SLOW=1 python -m pytest -m slow`` before a release).
"""
from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running check, skipped unless NAS_SLOW=1")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("NAS_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; set NAS_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny nets on one torch thread: they gain nothing from intra-op
    threads, and on a shared 2-core machine spinning OpenMP workers make them several
    times slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
