"""One contract suite over every strategy of nas.samplers.STRATEGIES, plus Optuna's own sampler contract.

Contract: the same seed gives the same proposals; only valid choices are
proposed; the sampler works with ``study.optimize`` and with ask/tell; on a toy
objective over the search space's categorical choices it beats (or matches)
random search at the same budget, averaged over seeds (except random itself).
"""
from __future__ import annotations

import optuna
import pytest
from optuna.testing.pytest_samplers import BasicSamplerTestCase, SingleOnlySamplerTestCase

from nas.samplers import MULTI_OBJECTIVE, STRATEGIES, PolicyGradientSampler, RegularizedEvolutionSampler, make_sampler
from search_spaces import SPACES

optuna.logging.set_verbosity(optuna.logging.WARNING)
NAMES = sorted(STRATEGIES)
SPACE = SPACES["mnasnet-b0"]
DISTS = SPACE.distributions()
# A toy reward over the real parameter names: count of "good" choices, so the optimum is known (42).
GOOD = {n: d.choices[-1] for n, d in DISTS.items()}


def _toy(trial):
    params = {n: trial.suggest_categorical(n, d.choices) for n, d in DISTS.items()}
    score = float(sum(params[n] == GOOD[n] for n in DISTS))
    if trial.study._is_multi_objective():
        return score, float(sum(params[n] == DISTS[n].choices[0] for n in DISTS))
    return score


def _study(name, seed):
    directions = ["maximize", "minimize"] if name in MULTI_OBJECTIVE else ["maximize"]
    return optuna.create_study(directions=directions, sampler=make_sampler(name, seed=seed))


def _params(study):
    return [t.params for t in study.trials]


def test_registry_is_complete():
    assert set(STRATEGIES) == {"tpe", "random", "nsga2", "evolution", "rl"}
    with pytest.raises(KeyError, match="unknown strategy"):
        make_sampler("annealing")


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_proposals(name):
    a, b, c = _study(name, 1), _study(name, 1), _study(name, 2)
    for s in (a, b, c):
        s.optimize(_toy, n_trials=25)
    assert _params(a) == _params(b)
    assert _params(a) != _params(c)


@pytest.mark.parametrize("name", NAMES)
def test_proposes_only_valid_choices_and_decodes(name):
    s = _study(name, 0)
    s.optimize(_toy, n_trials=30)
    for p in _params(s):
        assert set(p) == set(DISTS)
        assert all(p[n] in DISTS[n].choices for n in p)
        SPACE.decode(p)  # every proposal is a member of the space


@pytest.mark.parametrize("name", NAMES)
def test_ask_tell_matches_optimize(name):
    a = _study(name, 3)
    a.optimize(_toy, n_trials=25)
    b = _study(name, 3)
    for _ in range(25):
        t = b.ask()
        b.tell(t, _toy(t))
    assert _params(a) == _params(b)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "random"])
def test_beats_random_on_a_toy_objective(name):
    def best(strategy, seed):
        s = _study(strategy, seed)
        s.optimize(_toy, n_trials=80)
        return max(t.values[0] for t in s.trials)

    seeds = range(3)
    ours = sum(best(name, s) for s in seeds)
    rand = sum(best("random", s) for s in seeds)
    assert ours >= rand, (name, ours, rand)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in MULTI_OBJECTIVE])
def test_failed_trials_do_not_stall_the_search(name):
    """Half the space fails; the sampler still finishes the budget of COMPLETE trials."""
    s = _study(name, 0)
    n_complete = n_tries = 0
    while n_complete < 30 and n_tries < 200:
        t = s.ask()
        v = _toy(t)
        n_tries += 1
        if t.params["s1_op"] in ("conv", "dwconv"):
            s.tell(t, state=optuna.trial.TrialState.FAIL)
        else:
            s.tell(t, v)
            n_complete += 1
    assert n_complete == 30 and n_tries < 200


def test_evolution_children_are_one_mutation_from_a_parent():
    sampler = RegularizedEvolutionSampler(population_size=5, sample_size=2, seed=0)
    s = optuna.create_study(direction="maximize", sampler=sampler)
    s.optimize(_toy, n_trials=20)
    trials = s.trials
    for t in trials[5:]:
        earlier = [u.params for u in trials[: t.number]]
        assert min(sum(t.params[k] != p[k] for k in p) for p in earlier) <= 1 + sampler.max_retries


def test_rl_policy_moves_towards_rewarded_choices():
    sampler = PolicyGradientSampler(seed=0)
    s = optuna.create_study(direction="maximize", sampler=sampler)
    s.optimize(_toy, n_trials=120)
    probs = [sampler.probabilities(n)[DISTS[n].choices.index(GOOD[n])] for n in DISTS]
    uniform = [1 / len(DISTS[n].choices) for n in DISTS]
    assert sum(probs) > sum(uniform) * 1.2


@pytest.mark.parametrize("bad", [dict(population_size=1), dict(population_size=5, sample_size=6)])
def test_evolution_bad_arguments(bad):
    with pytest.raises(ValueError):
        RegularizedEvolutionSampler(**bad)


def test_rl_bad_arguments():
    with pytest.raises(ValueError):
        PolicyGradientSampler(learning_rate=0)


# ---- Optuna's published sampler contract (optuna.testing.pytest_samplers) for our samplers


@pytest.fixture(params=["evolution", "rl"])
def _ours(request):
    return request.param


class TestOptunaContract(BasicSamplerTestCase, SingleOnlySamplerTestCase):
    @pytest.fixture
    def sampler(self, _ours):
        return lambda: make_sampler(_ours, seed=0)
