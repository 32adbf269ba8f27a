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
