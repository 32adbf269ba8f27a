"""The one registry of estimators: a name, or ``name:ARG``, to a factory.

* :data:`ESTIMATORS`: plain names (``train``, ``proxy:<name>``, the benchmark lookups
  ``nas-bench-macro`` and ``nas-bench-macro:sample`` of :mod:`.benchmark`) to a factory
  ``factory(dataset, *, seed=0, <its options>)`` returning the callable estimator.
* :data:`ARG_ESTIMATORS`: a prefix whose argument is part of the name
  (``supernet:DIR``) to ``make(ARG) -> factory``.  A new family that needs an
  argument (a benchmark table: ``bench:TABLE``) is one entry here, its code in its
  own module beside :mod:`nas.estimators.supernet`, imported lazily by ``make``.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

from .benchmark import benchmark_estimators
from .proxy import ProxyEstimator
from .supernet import supernet_factory
from .trained import TrainEstimator

__all__ = ["ESTIMATORS", "ARG_ESTIMATORS", "DEFAULT_ESTIMATOR", "DEFAULT_PROXY", "make_estimator",
           "estimator_options"]

# Short training, chosen on the trust-cost frontier (results/evaluation/trust.json, scripts/trust.py):
# against the ground truth (results/ground_truth/: 52 architectures, 10k Fashion-MNIST images x 3
# epochs at 28 px, seeds agreeing with Spearman rho 0.80) one epoch of the embedded sample at 16 px
# ranks with rho 0.82 (90 % interval 0.70-0.89) at 7.1 s per architecture: no dearer training rung
# measured ranks better (3k x 1 epoch at 28 px: 0.82 at 9.7 s; 5k x 2 and 10k x 3 epochs: 0.73 and
# 0.70 on 16 architectures), every training-free proxy ranks at 0.65 or less (grad_norm, negated),
# the 8-epoch supernet at 0.23, and it fits the default search's 10 minutes (30 trials on two cores).
DEFAULT_ESTIMATOR = "train"
# What plain "proxy" means: synflow, the best-ranked training-free proxy in the literature
# (REFERENCE.md: |rho| 0.74 on NAS-Bench-201).
DEFAULT_PROXY = "proxy:synflow"


def _registry() -> dict[str, Callable]:
    from ..proxies import PROXIES

    reg: dict[str, Callable] = {f"proxy:{p}": functools.partial(ProxyEstimator, p) for p in PROXIES}
    reg["train"] = TrainEstimator
    reg.update(benchmark_estimators())  # nas-bench-macro, nas-bench-macro:sample: lookups (nas.benchmarks)
    return reg


ESTIMATORS: dict[str, Callable] = _registry()

#: ``PREFIX:ARG`` estimators: the prefix to ``make(ARG) -> factory``
ARG_ESTIMATORS: dict[str, Callable[[str], Callable]] = {
    "supernet": supernet_factory,  # a trained supernet's folder: scores members by inherited weights
}


def _factory(name: str) -> Callable:
    prefix, sep, arg = name.partition(":")
    if sep and prefix in ARG_ESTIMATORS:
        return ARG_ESTIMATORS[prefix](arg)
    try:
        return ESTIMATORS[DEFAULT_PROXY if name == "proxy" else name]
    except KeyError:
        raise KeyError(f"unknown estimator {name!r}; estimators: proxy, {', '.join(ESTIMATORS)}") from None


def estimator_options(name: str) -> tuple[str, ...]:
    """The options the estimator ``name`` takes: its factory's keyword-only parameters (``seed`` among them)."""
    params = inspect.signature(_factory(name)).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def make_estimator(name: str, dataset, **options):
    """``name`` is a key of :data:`ESTIMATORS`, or ``PREFIX:ARG`` for a prefix of :data:`ARG_ESTIMATORS`;
    ``proxy`` alone means the default proxy.

    An option the estimator does not take is a TypeError naming it (never silently dropped).
    """
    unknown = sorted(set(options) - set(estimator_options(name)))
    if unknown:
        raise TypeError(f"estimator {name!r} takes no option {', '.join(map(repr, unknown))}; "
                        f"its options: {', '.join(estimator_options(name))}")
    return _factory(name)(dataset, **options)
