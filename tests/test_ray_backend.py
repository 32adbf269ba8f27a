"""``--backend ray`` (nas.search.ray_backend): one small end-to-end Ray Tune run (Ray's start-up costs seconds).

Checks the contract shared with the local backend: the study holds exactly ``budget`` COMPLETE
trials with unique numbers, failures are FAIL with their reason (and replaced), the output folder
gets the same files with the same columns, and a rerun resumes instead of starting over.
"""
from __future__ import annotations

import json
import os
import pathlib

import optuna
import pytest
from optuna.trial import TrialState

import _fake_estimators as fe
from nas.search import JOURNAL_NAME, EstimatorConfig, SearchConfig, open_session, open_study, run_search, write_outputs

pytest.importorskip("ray")
TESTS = str(pathlib.Path(__file__).parent)


def test_ray_backend_end_to_end(tmp_path, monkeypatch):
    from nas.search.ray_backend import run_ray

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    out, cleanup = fe.fast_tmp_dir(tmp_path, "ray")
    import ray

    # one Ray for both runs (run_ray uses a running Ray and leaves it running): start-up costs seconds
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=str(out / "ray-tmp"), log_to_driver=False)
    try:
        cfg = SearchConfig(target=4e8, budget=5, strategy="tpe", seed=0,
                           estimator=EstimatorConfig("fake", factory="_fake_estimators:flaky"))
        res = run_ray(open_session(cfg, output=out / "ray"), workers=2)
        write_outputs(res, out / "ray")
        assert res.n_complete == 5 and res.extra["backend"] == "ray"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = open_study(str(out / "ray" / JOURNAL_NAME), res.study_name, None, ["maximize"])
        trials = study.get_trials(deepcopy=False)
        assert [t.number for t in trials] == list(range(len(trials)))
        assert len([t for t in trials if t.state == TrialState.COMPLETE]) == 5
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        for t in trials:
            if t.state == TrialState.COMPLETE:
                assert t.user_attrs["reward"] == t.value and t.user_attrs["fingerprint"]
            if t.state == TrialState.FAIL:
                assert t.user_attrs.get("reason")

        local = run_search(cfg, output=out / "local", estimator=fe.flaky())
        write_outputs(local, out / "local")
        assert sorted(p.name for p in (out / "ray").iterdir()) == sorted(p.name for p in (out / "local").iterdir())
        header = lambda d: (out / d / "trials.csv").read_text().splitlines()[0]  # noqa: E731
        assert header("ray") == header("local")
        s_ray, s_loc = (json.loads((out / d / "summary.json").read_text()) for d in ("ray", "local"))
        assert sorted(s_ray) == sorted(s_loc) and s_ray["reference"] == s_loc["reference"]
        # B0 was enqueued and evaluated through Tune as trial 0, exactly as locally
        assert trials[0].user_attrs["fingerprint"] == s_ray["reference"]["fingerprint"]

        # resume: a larger budget runs only the remainder on the same study
        cfg2 = SearchConfig(target=4e8, budget=7, strategy="tpe", seed=0,
                            estimator=EstimatorConfig("fake", factory="_fake_estimators:params"))
        res2 = run_ray(open_session(cfg2, output=out / "ray"), workers=2)
        assert res2.n_complete == 7
        after = {t.number: t.params for t in study.get_trials(deepcopy=False) if t.number < len(trials)}
        assert after == {t.number: t.params for t in trials}
    finally:
        ray.shutdown()
        cleanup()


@pytest.mark.slow
def test_ray_asha_with_a_per_epoch_estimator(tmp_path, monkeypatch):
    """Training estimator with several epochs: per-epoch results reach Tune, ASHA stops some trials
    (recorded PRUNED), and the budget still counts COMPLETE trials."""
    from nas.search.ray_backend import run_ray

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    out, cleanup = fe.fast_tmp_dir(tmp_path, "ray-asha")
    try:
        cfg = SearchConfig(target=4e8, budget=8, strategy="random", seed=0,
                           estimator=EstimatorConfig("train", factory="_fake_estimators:epochs"))
        res = run_ray(open_session(cfg, output=out), workers=2)
        assert res.n_complete == 8
        states = {r["state"] for r in res.rows}
        assert "PRUNED" in states, states
        assert all(r["accuracy"] is not None for r in res.rows if r["state"] == "COMPLETE")
    finally:
        cleanup()


@pytest.mark.slow
def test_nas_search_backend_ray_flag(tmp_path):
    """The console script with --backend ray: same files as a local run, quiet stderr."""
    import subprocess

    out, cleanup = fe.fast_tmp_dir(tmp_path, "ray-cli")
    try:
        r = subprocess.run(["nas-search", "--target-flops", "400M", "--estimator", "proxy:params", "--budget", "3",
                            "--backend", "ray", "--workers", "2", "--output", str(out), "--no-progress"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert json.loads((out / "summary.json").read_text())["n_trials_complete"] == 3
        assert sorted(p.name for p in out.iterdir()) == ["best.json", "pareto.png", "study.journal", "summary.json",
                                                         "trials.csv"]
    finally:
        cleanup()
