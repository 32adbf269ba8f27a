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

Adding an estimator is one entry in :data:`ESTIMATORS`: a name and a factory
``factory(dataset, *, seed=0, <its options>)`` returning the callable.  Its
keyword-only parameters are its options (:func:`estimator_options`): the search
passes ``seed`` and exactly the options the user set, and an option the factory
does not take fails at once (:func:`make_estimator`), so a misspelled one cannot
be silently ignored.
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field
from typing import Callable

from .spec import Spec

__all__ = ["Estimate", "ProxyEstimator", "TrainEstimator", "ESTIMATORS", "DEFAULT_ESTIMATOR", "DEFAULT_PROXY",
           "make_estimator", "estimator_options", "PROXY_RESOLUTION", "TRAIN_RESOLUTION", "TRAIN_RECIPE"]

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
TRAIN_RESOLUTION = 16  # px; B0 at 16 px trains one epoch of the embedded sample in ~22-28 s on one core
# AdamW (nas.train.RECIPES["adamw"]): in one 46-step epoch it trains B0 to 0.64 held-out accuracy
# where the EfficientNet recipe, tuned for 350 ImageNet epochs, reaches 0.25, and it ranks bigger
# nets less unfairly (the sweep is in nas/train.py).
TRAIN_RECIPE = "adamw"
PROXY_RESOLUTION = 32  # proxies run at a reduced resolution; FLOPs are counted at the spec's own


@dataclass(frozen=True)
class Estimate:
    score: float | None  # raw: proxy value or accuracy
    kind: str  # "proxy" | "train"
    failed: bool = False
    reason: str | None = None
    pruned: bool = False
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


class ProxyEstimator:
    kind = "proxy"

    def __init__(self, proxy: str, dataset, *, resolution: int | None = None, seed: int = 0, batch_size: int = 64):
        from .proxies import PROXIES

        if proxy not in PROXIES:
            raise KeyError(f"unknown proxy {proxy!r}; proxies: {', '.join(PROXIES)}")
        self.proxy, self.dataset, self.seed, self.batch_size = proxy, dataset, seed, batch_size
        self.resolution = int(resolution or PROXY_RESOLUTION)
        self.name = f"proxy:{proxy}"

    def __call__(self, spec: Spec, report: Callable | None = None) -> Estimate:
        import math

        from .proxies import score_proxy

        t0 = time.perf_counter()
        try:
            v = score_proxy(self.proxy, spec, self.dataset, resolution=self.resolution, batch_size=self.batch_size,
                            seed=self.seed)
        except (RuntimeError, ValueError, MemoryError, FloatingPointError) as e:
            return Estimate(None, self.kind, True, _reason(e),
                            seconds=time.perf_counter() - t0)
        if not math.isfinite(v):
            return Estimate(None, self.kind, True, f"{self.proxy} score is {v}", seconds=time.perf_counter() - t0)
        return Estimate(v, self.kind, seconds=time.perf_counter() - t0)

    def describe(self) -> dict:
        return {"name": self.name, "resolution": self.resolution, "seed": self.seed, "batch_size": self.batch_size}


class TrainEstimator:
    kind = "train"
    name = "train"

    def __init__(self, dataset, *, resolution: int | None = None, epochs: float = 1, seed: int = 0,
                 batch_size: int = 64, limit_train: int | None = None, limit_val: int | None = None,
                 recipe: str = TRAIN_RECIPE, device: str = "cpu"):
        self.dataset, self.epochs, self.seed, self.recipe = dataset, epochs, seed, recipe
        self.device = device  # a name for nas.devices.resolve_device: a config stays plain JSON
        self.resolution = int(resolution or TRAIN_RESOLUTION)
        self.batch_size, self.limit_train, self.limit_val = batch_size, limit_train, limit_val

    def __call__(self, spec: Spec, report: Callable | None = None) -> Estimate:
        from .devices import resolve_device
        from .train import train_and_evaluate

        on_epoch = (lambda epoch, acc: bool(report(epoch, acc))) if report else None
        t0 = time.perf_counter()
        try:
            r = train_and_evaluate(spec, self.dataset, epochs=self.epochs, resolution=self.resolution,
                                   batch_size=self.batch_size, seed=self.seed, limit_train=self.limit_train,
                                   limit_val=self.limit_val, on_epoch=on_epoch, recipe=self.recipe,
                                   device=resolve_device(self.device))
        except (RuntimeError, ValueError, MemoryError) as e:
            return Estimate(None, self.kind, True, _reason(e),
                            seconds=time.perf_counter() - t0)
        details = {"loss": r.loss, "epochs": r.epochs, "steps": r.steps, "images_per_second": r.images_per_second}
        if r.failed:
            return Estimate(None, self.kind, True, r.reason or "training failed", seconds=r.seconds, details=details)
        return Estimate(r.accuracy, self.kind, pruned=bool(r.pruned), seconds=r.seconds, details=details)

    def describe(self) -> dict:
        return {"name": self.name, "resolution": self.resolution, "epochs": self.epochs, "recipe": self.recipe,
                "device": self.device,
                "seed": self.seed, "batch_size": self.batch_size, "limit_train": self.limit_train, "limit_val": self.limit_val}


def _reason(e: BaseException) -> str:
    """One line for a failed estimate; a bare MemoryError says what it means."""
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return "out of memory" + (f": {str(e).splitlines()[0]}" if str(e).strip() else "")
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _registry() -> dict[str, Callable]:
    from .proxies import PROXIES

    reg: dict[str, Callable] = {f"proxy:{p}": functools.partial(ProxyEstimator, p) for p in PROXIES}
    reg["train"] = TrainEstimator
    return reg


ESTIMATORS: dict[str, Callable] = _registry()


def _factory(name: str) -> Callable:
    if name.startswith("supernet:"):  # a trained supernet's folder: scores members by inherited weights
        from .supernet import SupernetEstimator  # lazy: the checkpoint loads only when asked

        return functools.partial(SupernetEstimator, name.split(":", 1)[1])
    try:
        return ESTIMATORS[DEFAULT_PROXY if name == "proxy" else name]
    except KeyError:
        raise KeyError(f"unknown estimator {name!r}; estimators: proxy, {', '.join(ESTIMATORS)}") from None


def estimator_options(name: str) -> tuple[str, ...]:
    """The options the estimator ``name`` takes: its factory's keyword-only parameters (``seed`` among them)."""
    params = inspect.signature(_factory(name)).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def make_estimator(name: str, dataset, **options):
    """``name`` is a key of :data:`ESTIMATORS`; ``proxy`` alone means the default proxy.

    An option the estimator does not take is a TypeError naming it (never silently dropped).
    """
    unknown = sorted(set(options) - set(estimator_options(name)))
    if unknown:
        raise TypeError(f"estimator {name!r} takes no option {', '.join(map(repr, unknown))}; "
                        f"its options: {', '.join(estimator_options(name))}")
    return _factory(name)(dataset, **options)
