"""Estimators: how good is an architecture?  Registry :data:`ESTIMATORS`.

An estimator is a callable ``est(spec, report=None) -> Estimate``.  ``report``
(optional) is the multi-fidelity hook: the training estimator calls
``report(epoch, val_accuracy)`` after every epoch and stops early (``pruned``)
when it returns True, which is how an Optuna pruner plugs in.

* ``proxy:<name>`` for every proxy of :data:`nas.proxies.PROXIES`: a
  training-free score of the untrained network on one minibatch of the data at
  a reduced resolution (default 32 px).  ``Estimate.score`` is the raw proxy
  value (log-scale, any sign); the search maps it to an accuracy-like number
  with :class:`nas.reward.ProxyMap`.
* ``train``: :func:`nas.train.train_and_evaluate` (MnasNet's proxy task: the
  spec with the dataset's classes at a reduced resolution, a few epochs, with
  the short-budget recipe :data:`TRAIN_RECIPE`); ``score`` is the held-out accuracy.

A failure (exception, diverged or out-of-memory training) is an ``Estimate`` with
``failed=True`` and a one-line ``reason``, never an exception out of the estimator.

Adding an estimator is one entry in :data:`ESTIMATORS` (or, for a ``name:ARG`` family such as
``supernet:DIR``, in :data:`ARG_ESTIMATORS`): a name and a factory
``factory(dataset, *, seed=0, <its options>)`` returning the callable.  Its
keyword-only parameters are its options (:func:`estimator_options`): the search
passes ``seed`` and exactly the options the user set, and an option the factory
does not take fails at once (:func:`make_estimator`), so a misspelled one cannot
be silently ignored.

Layout (dependencies point down):

* :mod:`.registry`: :data:`ESTIMATORS`, :data:`ARG_ESTIMATORS`, :func:`make_estimator`;
* one module per family: :mod:`.trained` (``train``), :mod:`.proxy` (``proxy:<name>``),
  :mod:`.supernet` (the adapter for ``supernet:DIR``; the estimator is :mod:`nas.supernet`'s);
* :mod:`.types`: :class:`Estimate`, at the bottom; code outside this package that
  produces estimates imports it from there.
"""
from __future__ import annotations

from .proxy import PROXY_RESOLUTION, ProxyEstimator
from .registry import ARG_ESTIMATORS, DEFAULT_ESTIMATOR, DEFAULT_PROXY, ESTIMATORS, estimator_options, make_estimator
from .trained import TRAIN_RECIPE, TRAIN_RESOLUTION, TrainEstimator
from .types import Estimate

__all__ = ["Estimate", "ProxyEstimator", "TrainEstimator", "ESTIMATORS", "ARG_ESTIMATORS", "DEFAULT_ESTIMATOR",
           "DEFAULT_PROXY", "make_estimator", "estimator_options", "PROXY_RESOLUTION", "TRAIN_RESOLUTION",
           "TRAIN_RECIPE"]
