"""Regularized (aging) evolution as an Optuna sampler (Real et al., AAAI 2019, Algorithm 1).

The population is the ``population_size`` most recent COMPLETE trials (that is
the "aging": the oldest member dies whatever its fitness).  Until the population
is full, trials are sampled uniformly at random.  Afterwards each trial is a child:
``sample_size`` members are drawn at random (a tournament), the fittest is the
parent, and the child is the parent with one categorical parameter changed to
another of its values.  A child that equals an already-evaluated configuration is
mutated again (up to a few times), so a failing or a known configuration is not
re-proposed over and over.

All state lives in the study (the trials), so the sampler resumes for free and
works with ``study.optimize`` and with ask/tell.  Single-objective only.
Non-categorical parameters (not used by our spaces) are sampled at random by an
inner :class:`optuna.samplers.RandomSampler`, and so are their mutations.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["RegularizedEvolutionSampler"]


class RegularizedEvolutionSampler(BaseSampler):
    def __init__(self, population_size: int = 20, sample_size: int = 5, seed: int | None = None,
                 max_retries: int = 10):
        if population_size < 2 or not 1 <= sample_size <= population_size:
            raise ValueError("need population_size >= 2 and 1 <= sample_size <= population_size")
        self.population_size, self.sample_size, self.max_retries = population_size, sample_size, max_retries
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._space = IntersectionSearchSpace()

    def reseed_rng(self) -> None:
        self._rng = np.random.RandomState()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {n: d for n, d in self._space.calculate(study).items() if not d.single()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if not search_space:
            return {}
        done = [t for t in study._get_trials(deepcopy=False, states=(TrialState.COMPLETE,), use_cache=True)
                if all(n in t.params for n in search_space)]
        if len(done) < self.population_size:
            return {}  # still filling the population: sample_independent draws at random
        population = sorted(done, key=lambda t: t.number)[-self.population_size:]
        idx = self._rng.choice(len(population), size=self.sample_size, replace=False)
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        parent = max((population[i] for i in idx), key=lambda t: (sign * t.value, -t.number))
        seen = {self._key(t.params, search_space)
                for t in study._get_trials(deepcopy=False, states=None, use_cache=True)
                if t.state != TrialState.RUNNING and all(n in t.params for n in search_space)}
        child = dict((n, parent.params[n]) for n in search_space)
        for _ in range(self.max_retries + 1):
            child = self._mutate(study, trial, child, search_space)
            if self._key(child, search_space) not in seen:
                break
        return child

    @staticmethod
    def _key(params: dict, space: dict) -> tuple:
        return tuple((n, params[n]) for n in sorted(space))

    def _mutate(self, study, trial, params: dict, space: dict[str, BaseDistribution]) -> dict[str, Any]:
        names = sorted(space)
        name = names[self._rng.randint(len(names))]
        dist = space[name]
        out = dict(params)
        if isinstance(dist, CategoricalDistribution):
            others = [c for c in dist.choices if c != params[name]]
            if others:
                out[name] = others[self._rng.randint(len(others))]
        else:
            out[name] = self._random.sample_independent(study, trial, name, dist)
        return out

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        self._raise_error_if_multi_objective(study)
        return self._random.sample_independent(study, trial, param_name, param_distribution)
