"""The adapter for ``supernet:DIR``: a trained supernet's folder scores members by inherited weights.

The estimator itself lives in :mod:`nas.supernet` (it imports :class:`Estimate` from
:mod:`nas.estimators.types`, never from this package); this module only turns the
registry's argument into its factory, importing the supernet lazily so that the
checkpoint loads (and torch is imported) only when asked.
"""
from __future__ import annotations

import functools
from typing import Callable

__all__ = ["supernet_factory"]


def supernet_factory(directory: str) -> Callable:
    """``factory(dataset, *, seed=0, <options>)`` for the supernet trained in ``directory``."""
    from ..supernet import SupernetEstimator

    return functools.partial(SupernetEstimator, directory)
