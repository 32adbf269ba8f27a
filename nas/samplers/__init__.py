"""Search strategies as Optuna samplers; registry :data:`STRATEGIES`.

``STRATEGIES[name](seed=...)`` makes a sampler.  ``tpe``, ``random`` and ``nsga2``
are Optuna's; ``evolution`` (regularized/aging evolution, Real et al. 2019) and
``rl`` (MnasNet-style factorized policy trained by REINFORCE) are ours, in private
modules, re-exported here.  ``nsga2`` is multi-objective (accuracy up, cost down);
the engine asks :data:`MULTI_OBJECTIVE` which strategies need two objectives.
The package imports no torch, so the command line reads :data:`STRATEGY_NAMES` here.
"""
from __future__ import annotations

from typing import Callable

import optuna

from ._evolution import RegularizedEvolutionSampler
from ._rl import PolicyGradientSampler

__all__ = ["STRATEGIES", "STRATEGY_NAMES", "MULTI_OBJECTIVE", "DEFAULT_STRATEGY", "make_sampler", "RegularizedEvolutionSampler",
           "PolicyGradientSampler"]


def _tpe(seed=None):
    # Optuna 5 defaults (multivariate, constant liar); a few random start-up trials
    # suit budgets of tens to hundreds of trials.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10)


def _nsga2(seed=None):
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


STRATEGIES: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": lambda seed=None: optuna.samplers.RandomSampler(seed=seed),
    "nsga2": _nsga2,
    "evolution": lambda seed=None: RegularizedEvolutionSampler(seed=seed),
    "rl": lambda seed=None: PolicyGradientSampler(seed=seed),
}
# The names alone, for the command line's help and checks (this package imports no torch).
STRATEGY_NAMES: tuple[str, ...] = tuple(STRATEGIES)
MULTI_OBJECTIVE = frozenset({"nsga2"})
DEFAULT_STRATEGY = "tpe"


def make_sampler(name: str, seed: int | None = None) -> optuna.samplers.BaseSampler:
    try:
        return STRATEGIES[name](seed=seed)
    except KeyError:
        raise KeyError(f"unknown strategy {name!r}; strategies: {', '.join(STRATEGIES)}") from None
