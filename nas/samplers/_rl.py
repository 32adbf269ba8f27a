"""MnasNet-style reinforcement learning as an Optuna sampler.

MnasNet (Tan et al. 2019, Sec. 4.2) trains an RNN controller with PPO to emit the
factorized choices.  Here the policy is simpler and stated exactly: a
**factorized softmax policy**, one independent vector of logits per categorical
parameter (one softmax per choice of the space), trained by **REINFORCE with a
moving-average baseline** (Williams 1992), not PPO:

    for every finished trial, in trial-number order, with reward R:
        A = (R - b) / s                    # advantage, normalized by a running scale s
        logits[p] += lr * A * (onehot(a_p) - softmax(logits[p]))   for every parameter p
        b = decay * b + (1 - decay) * R     # moving-average baseline
        s = decay * s + (1 - decay) * |R - b|

The first finished trial only initializes b.  Failed trials get the worst reward
seen so far (the policy learns to avoid them).  Non-categorical parameters are
sampled by an inner RandomSampler.

The policy is rebuilt from the study's finished trials (each consumed once, in
order), so it resumes from storage and gives the same proposals for the same seed
and history, with ``study.optimize`` and with ask/tell.  Single-objective only.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["PolicyGradientSampler"]


class PolicyGradientSampler(BaseSampler):
    def __init__(self, learning_rate: float = 0.2, baseline_decay: float = 0.9, seed: int | None = None):
        if not learning_rate > 0 or not 0 <= baseline_decay < 1:
            raise ValueError("need learning_rate > 0 and 0 <= baseline_decay < 1")
        self.learning_rate, self.baseline_decay = learning_rate, baseline_decay
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed=seed)
        self._study_id: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._logits: dict[str, np.ndarray] = {}
        self._choices: dict[str, tuple] = {}
        self._consumed: set[int] = set()
        self._baseline: float | None = None
        self._scale = 0.0
        self._worst: float | None = None

    def reseed_rng(self) -> None:
        self._rng = np.random.RandomState()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        self._raise_error_if_multi_objective(study)
        return {}

    def probabilities(self, name: str) -> np.ndarray | None:
        """The policy's current distribution over ``name``'s choices (None if not seen yet)."""
        lg = self._logits.get(name)
        return None if lg is None else _softmax(lg)

    def _policy(self, name: str, dist: CategoricalDistribution) -> np.ndarray:
        if name not in self._logits or self._choices[name] != tuple(dist.choices):
            self._logits[name] = np.zeros(len(dist.choices))
            self._choices[name] = tuple(dist.choices)
        return self._logits[name]

    def _update(self, study: optuna.Study) -> None:
        if self._study_id != study._study_id:  # a new study: start from scratch
            self._reset()
            self._study_id = study._study_id
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL), use_cache=True)
        for t in sorted(finished, key=lambda t: t.number):
            if t.number in self._consumed:
                continue
            self._consumed.add(t.number)
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
                r = sign * t.value
                self._worst = r if self._worst is None else min(self._worst, r)
            elif self._worst is not None:
                r = self._worst
            else:
                continue
            if self._baseline is None:
                self._baseline = r
                continue
            adv = r - self._baseline
            self._scale = self.baseline_decay * self._scale + (1 - self.baseline_decay) * abs(adv)
            a = adv / self._scale if self._scale > 0 else 0.0
            for name, dist in t.distributions.items():
                if not isinstance(dist, CategoricalDistribution) or name not in t.params:
                    continue
                lg = self._policy(name, dist)
                onehot = np.zeros(len(lg))
                onehot[dist.to_internal_repr(t.params[name])] = 1.0
                lg += self.learning_rate * a * (onehot - _softmax(lg))
            self._baseline = self.baseline_decay * self._baseline + (1 - self.baseline_decay) * r

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        self._raise_error_if_multi_objective(study)
        if not isinstance(param_distribution, CategoricalDistribution):
            return self._random.sample_independent(study, trial, param_name, param_distribution)
        self._update(study)
        p = _softmax(self._policy(param_name, param_distribution))
        return param_distribution.choices[int(self._rng.choice(len(p), p=p))]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()
