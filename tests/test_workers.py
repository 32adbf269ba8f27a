"""``--workers N`` (nas.search.workers): N processes on one journal study, exact budget, no duplicates, no losses."""
from __future__ import annotations

import os
import pathlib

import optuna
import pytest
from optuna.trial import TrialState

import _fake_estimators as fe
from nas.search import (JOURNAL_NAME, EstimatorConfig, LatencyConfig, SearchConfig, open_session, open_study,
                        run_search, write_outputs)
from nas.search.workers import budget_lock_path, run_workers
from nas.storage import repair_journal

TESTS = str(pathlib.Path(__file__).parent)


@pytest.fixture
def out(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    d, cleanup = fe.fast_tmp_dir(tmp_path)
    yield d
    cleanup()


def fake(factory: str = "params") -> EstimatorConfig:
    """A cheap estimator that worker processes rebuild by name (tests/_fake_estimators.py)."""
    return EstimatorConfig("fake", factory=f"_fake_estimators:{factory}")


def _study(folder: pathlib.Path, cfg: SearchConfig):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return open_study(str(folder / JOURNAL_NAME), cfg.default_study_name(), None, ["maximize"])


def _check(study, budget):
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))), "trial numbers must be unique and dense"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for t in complete:
        assert t.user_attrs.get("reward") is not None and t.user_attrs.get("fingerprint")
    return trials


def test_two_workers_meet_the_budget_exactly_and_resume(out):
    cfg = SearchConfig(target=4e8, estimator=fake(), budget=9, strategy="random", seed=0)
    res = run_workers(open_session(cfg, output=out), 2)
    assert res.n_complete == 9 and not res.interrupted and res.extra["workers"] == 2
    first = {t.number: t.params for t in _check(_study(out, cfg), 9)}
    # both workers contributed: their samplers have different seeds, so proposals differ
    assert len({t["fingerprint"] for t in res.rows}) > 5

    # the same search with a larger budget runs only the remainder, keeping every finished trial
    cfg2 = SearchConfig(target=4e8, estimator=fake(), budget=14, strategy="random", seed=0)
    # (the study name does not depend on the budget)
    assert cfg2.default_study_name() == cfg.default_study_name()
    res2 = run_workers(open_session(cfg2, output=out), 2)
    trials = _check(_study(out, cfg2), 14)
    assert res2.n_complete == 14
    assert {t.number: t.params for t in trials if t.number in first} == first


def test_outputs_match_the_single_process_backend(out, tmp_path):
    cfg = SearchConfig(target=4e8, estimator=fake(), budget=4, strategy="tpe", seed=0)
    res = run_workers(open_session(cfg, output=out / "w"), 2)
    write_outputs(res, out / "w")
    local = run_search(cfg, output=out / "l", estimator=fe.params())
    write_outputs(local, out / "l")
    assert sorted(p.name for p in (out / "w").iterdir()) == sorted(p.name for p in (out / "l").iterdir())
    head = lambda p: p.read_text().splitlines()[0]  # noqa: E731
    assert head(out / "w" / "trials.csv") == head(out / "l" / "trials.csv")
    import json

    sw, sl = (json.loads((out / d / "summary.json").read_text()) for d in ("w", "l"))
    assert sorted(sw) == sorted(sl)
    assert sw["n_trials_complete"] == 4 and sw["reference"] == sl["reference"]
    assert not budget_lock_path(str(out / "w" / JOURNAL_NAME), res.study_name).parent.samefile(out / "w")


def test_failing_trials_in_workers_are_replaced(out):
    cfg = SearchConfig(target=4e8, estimator=fake("flaky"), budget=8, strategy="random", seed=2)
    res = run_workers(open_session(cfg, output=out), 2)
    trials = _check(_study(out, cfg), 8)
    fails = [t for t in trials if t.state == TrialState.FAIL]
    assert fails and all(t.user_attrs.get("reason") for t in fails)
    assert res.n_failed == len(fails)


def test_stale_running_trials_are_failed_and_requeued(out):
    """What a kill -9 leaves behind: a RUNNING trial with its parameters; the next run fails and re-runs it."""
    cfg = SearchConfig(target=4e8, estimator=fake(), budget=3, strategy="random", seed=0)
    open_session(cfg, output=out)  # the set-up alone: study, references, B0 enqueued
    study = _study(out, cfg)
    t = study.ask()  # B0, enqueued by the set-up
    from search_spaces import get_space

    for name, d in get_space(cfg.space).distributions().items():
        t.suggest_categorical(name, d.choices)
    stale_params = dict(t.params)
    res = run_workers(open_session(cfg, output=out), 2)
    trials = _check(_study(out, cfg), 3)
    assert trials[t.number].state == TrialState.FAIL and trials[t.number].user_attrs["reason"].startswith("stale")
    assert any(x.params == stale_params and x.state == TrialState.COMPLETE for x in trials[t.number + 1:])
    assert res.n_complete == 3


def test_a_broken_estimator_is_one_error(out):
    cfg = SearchConfig(target=4e8, estimator=fake("broken"), budget=3)
    with pytest.raises(RuntimeError, match="cannot build the estimator"):
        run_workers(open_session(cfg, output=out), 2)


def test_workers_must_be_positive(out):
    cfg = SearchConfig(target=4e8, estimator=fake(), budget=3)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_workers(open_session(cfg, output=out), 0)


def test_workers_measure_latency_as_configured(out):
    """The workers' latency meter gets the configured runs and warmup (they once fell back to the
    meter's defaults, 10 and 3, while the references, measured by the parent, got the setting)."""
    import json

    cfg = SearchConfig(target=0.02, metric="latency", estimator=fake(), budget=3, strategy="random",
                       calibration_samples=2, latency=LatencyConfig(runs=2, warmup=0))
    res = run_workers(open_session(cfg, output=out), 2)
    assert res.n_complete == 3
    cache = json.loads((out / "latency_cache.json").read_text())
    # trial 0 is B0, measured by the parent as a reference; the others only by the workers
    searched = {r["fingerprint"] for r in res.rows[1:] if r["state"] == "COMPLETE"}
    assert searched - {r["fingerprint"] for r in res.reference.values()}
    assert {cache[f"{fp}@1"]["runs"] for fp in searched} == {2}
    assert {v["runs"] for v in cache.values()} == {2}


def test_every_process_builds_the_same_session(out):
    """A worker rebuilds the owner's session from its configuration: same objective settings, same map."""
    cfg = SearchConfig(target=0.02, metric="latency", estimator=fake(), budget=3, calibration_samples=2,
                       latency=LatencyConfig(threads=1, runs=2, warmup=1))
    owner = open_session(cfg, output=out)
    worker = open_session(owner.config, role="worker", worker=1)
    trial = open_session(owner.config, role="trial", setup=owner.setup)
    for s in (worker, trial):
        assert s.accuracy_map.to_dict() == owner.accuracy_map.to_dict() and s.reference == owner.reference
        assert (s.directions, s.max_attempts, s.early_stopping) == (owner.directions, owner.max_attempts,
                                                                     owner.early_stopping)
        assert s.study_name == owner.study_name and s.storage == owner.storage
        assert (s.latency_meter.runs, s.latency_meter.warmup, s.latency_meter.threads) == (2, 1, 1)
    assert (owner.latency_meter.runs, owner.latency_meter.warmup) == (2, 1)
    assert trial.study is None and len(worker.study.trials) == len(owner.study.trials) == 1  # B0, enqueued


def test_repair_journal_drops_a_torn_last_line_and_a_stale_lock(tmp_path):
    p = tmp_path / "j"
    p.write_bytes(b'{"a":1}\n{"b":')
    assert repair_journal(p) and p.read_bytes() == b'{"a":1}\n'
    assert not repair_journal(p) and p.read_bytes() == b'{"a":1}\n'
    assert not repair_journal(tmp_path / "missing")
    # the lock a killed writer leaves (a dangling symlink once the holder is gone)
    (tmp_path / "j.lock").symlink_to(tmp_path / "j")
    assert repair_journal(p) and not os.path.lexists(tmp_path / "j.lock")


def test_nas_search_workers_flag(out):
    """The console script dispatches --workers 2 to nas.search.workers and writes the usual outputs."""
    import json
    import subprocess

    r = subprocess.run(["nas-search", "--target-flops", "400M", "--estimator", "proxy:params", "--strategy", "random",
                        "--budget", "4", "--workers", "2", "--output", str(out), "--no-progress"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_trials_complete"] == 4
    assert sorted(p.name for p in out.iterdir()) == ["best.json", "pareto.png", "study.journal", "summary.json",
                                                     "trials.csv"]
