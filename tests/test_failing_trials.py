"""Part 4 of issue 7: a trial that raises, reports a NaN loss or runs out of memory is recorded
(state FAIL, a one-line reason) and the search goes on; no strategy re-proposes a failing
configuration forever.  In-process, with cheap fake estimators (tests/_fake_estimators.py)."""
from __future__ import annotations

import collections
import csv
import json

import pytest

import _fake_estimators as fe
from nas.search import EstimatorConfig, SearchConfig, run_search, write_outputs
from nas.samplers import STRATEGIES

BUDGET = 10
FAKE = EstimatorConfig("fake")  # names the study; the estimator object is passed to run_search


@pytest.fixture
def tmp_path(tmp_path):  # the same name, on tmpfs (see fast_tmp_dir)
    d, cleanup = fe.fast_tmp_dir(tmp_path)
    yield d
    cleanup()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_failures_are_recorded_and_the_search_meets_its_budget(strategy, tmp_path):
    est = fe.flaky()
    res = run_search(SearchConfig(target=4e8, estimator=FAKE, budget=BUDGET, strategy=strategy, seed=1),
                     output=tmp_path, estimator=est)
    assert res.n_complete == BUDGET and res.stopped_reason is None
    fails = [r for r in res.rows if r["state"] == "FAIL"]
    assert fails, "the flaky estimator fails on ~40% of architectures: some trial must have failed"
    for r in fails:
        assert r["reason"] and "\n" not in r["reason"], r
    # a configuration known to fail is never estimated twice (the engine's memo answers it)
    searched = collections.Counter(est.calls[26:])  # after 2 references + 24 calibration samples
    failing = {r["fingerprint"] for r in fails}
    assert all(searched[fp] <= 1 for fp in failing), searched.most_common(3)
    # the outputs carry state and reason per trial
    write_outputs(res, tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "trials.csv")))
    assert {r["state"] for r in rows} >= {"COMPLETE", "FAIL"}
    assert all(r["reason"] for r in rows if r["state"] == "FAIL")
    assert json.loads((tmp_path / "summary.json").read_text())["n_trials_failed"] == len(fails)


def test_each_failure_kind_keeps_its_reason(tmp_path):
    res = run_search(SearchConfig(target=4e8, estimator=FAKE, budget=25, strategy="random", seed=3),
                     output=tmp_path, estimator=fe.flaky())
    reasons = [r["reason"] for r in res.rows if r["state"] == "FAIL"]
    assert any("nan" in r for r in reasons)
    assert any("out of memory" in r or "MemoryError" in r for r in reasons)
    assert any("boom" in r for r in reasons)


@pytest.mark.parametrize("strategy", ["tpe", "evolution", "rl"])
def test_a_search_where_everything_fails_stops(strategy, tmp_path):
    """No strategy may loop forever on failing proposals: the engine stops and says why."""
    est = fe.always_fail()
    res = run_search(SearchConfig(target=4e8, estimator=FAKE, budget=5, strategy=strategy, seed=0),
                     output=tmp_path, estimator=est)
    assert res.n_complete == 1  # the enqueued EfficientNet-B0 (a reference: it scores)
    assert res.stopped_reason and "failed" in res.stopped_reason
    n_fail = res.n_failed
    assert 20 <= n_fail <= 5 + 20 + 1
    # every failing architecture was estimated once; repeats were answered from the memo
    searched = collections.Counter(est.calls[26:])
    assert max(searched.values()) == 1
