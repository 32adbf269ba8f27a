"""The search engine and the nas-search command: outputs, resume, failures, Ctrl-C, bad input.

Engine tests use a cheap fake estimator (analytic, milliseconds per trial);
CLI tests use ``--estimator proxy:flops`` (analytic, no model is built) and tiny budgets.
"""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from nas.cli.search import main as cli_main
from nas.estimators import ESTIMATORS, Estimate
from nas.presets import load_preset
from nas.spec import Spec
from reference import B0
from nas.search import (JOURNAL_NAME, LatencyConfig, SearchConfig, StorageConfig, make_cost_fn, make_objective,
                        open_study, recover_stale_trials, run_search, summary_text, write_outputs)
from nas.reward import IdentityMap, Reward
from nas.samplers import make_sampler
from search_spaces import SPACES

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = SPACES["mnasnet-b0"]
OUTPUTS = ("best.json", "trials.csv", "summary.json", "pareto.png")


class FakeEstimator:
    """score = 12 * ln(params proxy) + a deterministic wiggle; fails on a regular conv in stage 1."""

    kind = "proxy"
    name = "fake"

    def __init__(self, fail_conv=False):
        self.calls = 0
        self.fail_conv = fail_conv

    def __call__(self, spec, report=None):
        from nas.cost import cost

        self.calls += 1
        if self.fail_conv and spec.stages[0].op == "conv":
            return Estimate(None, self.kind, True, "fake failure: conv in stage 1")
        c = cost(spec, 32)
        wiggle = int(spec.fingerprint()[:4], 16) / 65536.0
        return Estimate(12 * math.log(c.params) + wiggle, self.kind)

    def describe(self):
        return {"name": self.name}


def _cfg(tmp_path, **kw):
    base = dict(target=400e6, strategy="random", budget=6, seed=0, storage=StorageConfig(output=str(tmp_path / "out")),
                calibration_samples=6, latency=LatencyConfig(runs=1, warmup=0))
    base.update(kw)
    return SearchConfig(**base)


def _complete(res):
    return [r for r in res.rows if r["state"] == "COMPLETE"]


def test_run_writes_every_output_and_beats_b0(tmp_path):
    cfg = _cfg(tmp_path, budget=8)
    res = run_search(cfg, estimator=FakeEstimator())
    assert res.n_complete == 8 and not res.interrupted
    # B0 is enqueued first: the best can never be below it
    assert res.rows[0]["fingerprint"] == load_preset("efficientnet-b0").fingerprint()
    assert res.best["reward"] >= res.reference["efficientnet-b0"]["reward"]
    assert res.reference["efficientnet-b0"]["flops"] == B0.flops
    files = write_outputs(res, tmp_path / "out")
    assert sorted(p.name for p in files) == sorted(OUTPUTS)
    spec = Spec.load(tmp_path / "out" / "best.json")
    prov = spec.provenance
    assert prov["strategy"] == "random" and prov["seed"] == 0 and prov["constraint"] == "absolute"  # the default: TuNAS's reward
    assert prov["reward"] == pytest.approx(res.best["reward"]) and prov["cost"]["flops"] == res.best["flops"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_trials_complete"] == 8 and summary["best_beats_reference"]
    assert set(summary["best"]) >= {"reward", "accuracy", "flops"} and summary["reference"]["flops"] == B0.flops
    rows = list(csv.DictReader(open(tmp_path / "out" / "trials.csv")))
    assert len(rows) == 8 and {"number", "state", "param_s1_op", "accuracy", "flops", "reward"} <= set(rows[0])
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / JOURNAL_NAME).exists()
    assert "efficientnet-b0" in summary_text(res)


def test_rewards_are_recomputable_from_user_attrs(tmp_path):
    res = run_search(_cfg(tmp_path, constraint="hard"), estimator=FakeEstimator())
    r = Reward.make(400e6, "flops", "hard")
    for row in _complete(res):
        assert row["reward"] == pytest.approx(r(row["accuracy"], row["flops"]))


def test_resume_neither_repeats_nor_loses_trials(tmp_path):
    est = FakeEstimator()
    first = run_search(_cfg(tmp_path, budget=5), estimator=est)
    calls = est.calls
    again = run_search(_cfg(tmp_path, budget=5), estimator=est)
    assert again.n_complete == 5 and est.calls == calls  # nothing to do, nothing re-estimated
    more = run_search(_cfg(tmp_path, budget=9), estimator=est)
    assert more.n_complete == 9
    assert [r["fingerprint"] for r in more.rows[:5]] == [r["fingerprint"] for r in first.rows]
    assert [r["number"] for r in more.rows] == list(range(9))


def test_same_seed_same_search(tmp_path):
    a = run_search(_cfg(tmp_path / "a", strategy="evolution"), estimator=FakeEstimator())
    b = run_search(_cfg(tmp_path / "b", strategy="evolution"), estimator=FakeEstimator())
    assert [r["fingerprint"] for r in a.rows] == [r["fingerprint"] for r in b.rows]


def test_stale_running_trial_is_failed_and_requeued(tmp_path):
    cfg = _cfg(tmp_path, budget=3)
    run_search(cfg, estimator=FakeEstimator())
    # simulate a process killed mid-trial: a RUNNING trial with full params
    study = open_study(str(tmp_path / "out" / JOURNAL_NAME), cfg.default_study_name(), make_sampler("random", 5),
                       ["maximize"])
    t = study.ask()
    params = {n: t.suggest_categorical(n, d.choices) for n, d in SPACE.distributions().items()}
    res = run_search(_cfg(tmp_path, budget=4), estimator=FakeEstimator())
    states = [r["state"] for r in res.rows]
    assert states.count("FAIL") == 1 and states.count("COMPLETE") == 4 and "RUNNING" not in states
    stale = res.rows[t.number]
    assert stale["reason"].startswith("stale")
    rerun = res.rows[-1]
    assert {k[6:]: v for k, v in rerun.items() if k.startswith("param_")} == params
    assert recover_stale_trials(study) == 0


def test_failing_trials_are_recorded_and_not_reestimated(tmp_path):
    est = FakeEstimator(fail_conv=True)
    res = run_search(_cfg(tmp_path, budget=20, strategy="evolution"), estimator=est)
    failed = [r for r in res.rows if r["state"] == "FAIL"]
    assert res.n_complete == 20 and failed
    assert all(r["reason"] == "fake failure: conv in stage 1" for r in failed)
    assert all(r["param_s1_op"] == "conv" for r in failed)


def test_a_sampler_stuck_on_failures_stops(tmp_path):
    class AlwaysFails(FakeEstimator):
        def __call__(self, spec, report=None):
            if spec.fingerprint() == load_preset("efficientnet-b0").fingerprint() or self.calls < 8:
                return super().__call__(spec, report)  # references and calibration succeed
            return Estimate(None, self.kind, True, "always")

    res = run_search(_cfg(tmp_path, budget=2), estimator=AlwaysFails())
    assert res.stopped_reason and res.n_complete < 2


def test_nsga2_reports_a_pareto_front(tmp_path):
    res = run_search(_cfg(tmp_path, strategy="nsga2", budget=10), estimator=FakeEstimator())
    assert res.n_complete == 10 and res.pareto
    flops = [p["flops"] for p in res.pareto]
    accs = [p["accuracy"] for p in res.pareto]
    assert flops == sorted(flops) and accs == sorted(accs)  # cheaper is less accurate along the front
    write_outputs(res, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["pareto"]


def test_objective_works_with_fixed_trial():
    b0 = SPACE.encode(load_preset("efficientnet-b0"))
    obj = make_objective(SPACE, FakeEstimator(), Reward.make(400e6), IdentityMap(), make_cost_fn("flops"))
    trial = optuna.trial.FixedTrial(b0)
    value = obj(trial)
    assert value == pytest.approx(trial.user_attrs["reward"])
    assert trial.user_attrs["flops"] == B0.flops


def test_latency_target_measures_and_caches(tmp_path):
    res = run_search(_cfg(tmp_path, metric="latency", target=0.02, budget=2), estimator=FakeEstimator())
    assert all(r["latency"] > 0 for r in _complete(res))
    cache = json.loads((tmp_path / "out" / "latency_cache.json").read_text())
    assert all(k.endswith("@1") and v["threads"] == 1 for k, v in cache.items())
    assert {v["runs"] for v in cache.values()} == {1}  # the configured runs, not LatencyMeter's default 10


def test_training_estimator_is_registered_with_every_proxy():
    from nas.proxies import PROXIES

    assert set(ESTIMATORS) == {f"proxy:{p}" for p in PROXIES} | {"train", "nas-bench-macro", "nas-bench-macro:sample"}


def test_training_estimator_uses_the_short_budget_recipe_and_records_it(monkeypatch):
    import nas.train
    from nas.data import load_dataset
    from nas.estimators import TRAIN_RECIPE, make_estimator

    seen = {}

    def fake_train(spec, dataset, **kw):
        seen.update(kw)
        return nas.train.TrainResult(accuracy=0.5, loss=1.0, epochs=1.0, steps=1, seconds=0.0,
                                     images_per_second=0.0, resolution=16, test_resolution=16, recipe=kw["recipe"],
                                     seed=0, num_classes=10)

    monkeypatch.setattr(nas.train, "train_and_evaluate", fake_train)
    est = make_estimator("train", load_dataset("sample"))
    assert TRAIN_RECIPE == "adamw" and est.describe()["recipe"] == "adamw"
    assert est(load_preset("efficientnet-b0")).score == 0.5 and seen["recipe"] == "adamw"
    assert make_estimator("train", load_dataset("sample"), recipe="resnet").describe()["recipe"] == "resnet"


# ---------------------------------------------------------------- the command


def test_cli_run_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--target-flops", "0.4G", "--estimator", "proxy:flops", "--budget", "3", "--output", str(out),
            "--no-progress", "--strategy", "random"]
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "efficientnet-b0" in text and "best" in text
    assert all((out / f).exists() for f in OUTPUTS)
    assert cli_main(argv[:5] + ["5"] + argv[6:]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_trials_complete"] == 5 and s["target"] == {"metric": "flops", "value": 4e8}


BAD = [
    ([], "exactly one"),
    (["--target-flops", "400M", "--target-latency", "20ms"], "exactly one"),
    (["--target-flops", "lots"], "cannot parse"),
    (["--target-flops", "0"], "> 0"),
    (["--target-flops=-400M"], "> 0"),
    (["--target-latency=-1ms"], "> 0"),
    (["--target-flops", "400M", "--strategy", "annealing"], "unknown strategy"),
    (["--target-flops", "400M", "--estimator", "oracle"], "unknown estimator"),
    (["--target-flops", "400M", "--evaluator", "proxy:magic"], "unknown estimator"),
    (["--target-flops", "400M", "--estimator", "proxy:synflow", "--epochs", "2"], "--epochs does not apply"),
    (["--target-flops", "400M", "--evaluator", "proxy", "--limit-train", "64"], "--limit-train does not apply"),
    (["--target-flops", "400M", "--budget", "0"], "--budget"),
    (["--target-flops", "400M", "--budget", "-3"], "--budget"),
    (["--target-flops", "400M", "--constraint", "medium"], "--constraint"),
    (["--target-flops", "400M", "--space", "darts"], "unknown space"),
    (["--target-flops", "400M", "--epochs", "0"], "--epochs"),
    (["--target-flops", "400M", "--storage", "study.db"], "storage URL"),
    (["--target-flops", "400M", "--limit-train", "1"], "--limit-train"),
    (["--target-flops", "400M", "--resolution", "4"], "--resolution"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) or "none" for a, _ in BAD])
def test_cli_bad_input(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    assert cli_main(argv + ["--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err
    assert not out.exists()


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli_main(["--target-flops", "400M", "--output", str(blocker / "sub")]) == 2
    assert "not a writable folder" in capsys.readouterr().err
    assert cli_main(["--target-flops", "400M", "--output", str(blocker)]) == 2
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert cli_main(["--target-flops", "400M", "--output", str(ro / "x")]) == 2


def test_cli_ctrl_c_writes_best_so_far_and_resumes(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from nas.cli.search import entry; entry()", "--target-flops", "400M",
           "--estimator", "proxy:flops", "--strategy", "random", "--budget", "100000", "--output", str(out),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / JOURNAL_NAME
    deadline = time.time() + 60
    while time.time() < deadline and (not journal.exists() or journal.stat().st_size < 30_000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["interrupted"] and s["n_trials_complete"] >= 1 and (out / "best.json").exists()
    n = s["n_trials_complete"]
    # resume to a small budget above what was done: no RUNNING left, nothing lost
    cmd[cmd.index("100000")] = str(n + 2)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    s2 = json.loads((out / "summary.json").read_text())
    assert s2["n_trials_complete"] == n + 2 and not s2["interrupted"]
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert not any(r["state"] == "RUNNING" for r in rows)


def test_cli_defaults_follow_the_proxy_study(tmp_path):
    # results/evaluation: every proxy anti-correlates with trained accuracy near B0, so the
    # default estimator is short training, with a budget that keeps the run under 10 minutes.
    from nas.cli.search import parse_config
    from nas.estimators import TRAIN_RESOLUTION, make_estimator
    from nas.search import DEFAULT_BUDGET, TRAIN_BUDGET

    cfg, *_ = parse_config(["--target-flops", "400M", "--output", str(tmp_path / "a")])
    assert (cfg.estimator.name, cfg.budget, cfg.estimator.data) == ("train", TRAIN_BUDGET, "sample")
    assert make_estimator(cfg.estimator.name, None).resolution == TRAIN_RESOLUTION == 16
    cfg, *_ = parse_config(["--target-flops", "400M", "--evaluator", "proxy", "--output", str(tmp_path / "b")])
    assert (cfg.estimator.name, cfg.budget) == ("proxy:synflow", DEFAULT_BUDGET)


def test_the_config_defaults_are_the_cli_defaults(tmp_path):
    # a search configured in code runs what the bare command runs (once the proxy:synflow default of
    # SearchConfig disagreed with the command's train)
    from nas.cli.search import parse_config
    from nas.estimators import DEFAULT_ESTIMATOR

    out = str(tmp_path / "a")
    cfg, *_ = parse_config(["--target-flops", "400M", "--output", out])
    assert cfg == SearchConfig(target=400e6, storage=StorageConfig(output=out))
    assert SearchConfig(target=1.0).estimator.name == DEFAULT_ESTIMATOR


@pytest.mark.parametrize("flag", ["--estimator", "--evaluator"])
def test_estimator_flag_and_its_old_name(tmp_path, flag):
    from nas.cli.search import parse_config

    cfg, *_ = parse_config(["--target-flops", "400M", flag, "proxy:snip", "--output", str(tmp_path / "a")])
    assert cfg.estimator.name == "proxy:snip"


def test_a_misspelled_estimator_option_fails_loudly(tmp_path):
    from nas.estimators import make_estimator
    from nas.search import EstimatorConfig, estimator_for

    with pytest.raises(TypeError, match="'epoch'"):
        make_estimator("train", None, epoch=3)
    with pytest.raises(TypeError, match="'limit_train'"):  # a training option given to a proxy
        make_estimator("proxy:synflow", None, limit_train=64)
    cfg = SearchConfig(target=4e8, estimator=EstimatorConfig("train", options={"recipie": "adamw"}))
    with pytest.raises(TypeError, match="'recipie'"):
        estimator_for(cfg, dataset=object())


def test_config_round_trips_through_plain_data():
    # how worker processes receive it; an unknown setting is refused, not ignored
    from nas.search import EstimatorConfig

    cfg = SearchConfig(target=0.02, metric="latency", estimator=EstimatorConfig("train", options={"epochs": 2.0}),
                       latency=LatencyConfig(runs=2, warmup=1), storage=StorageConfig(output="x"))
    assert SearchConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="latency_runs"):
        SearchConfig.from_dict({**cfg.to_dict(), "latency_runs": 2})


def test_cli_recipe_reaches_the_training_estimator(tmp_path):
    # one construction (nas.search.estimator_for) serves the engine, the local workers and Ray
    from nas.cli.search import parse_config
    from nas.search import estimator_for

    cfg, *_ = parse_config(["--target-flops", "400M", "--output", str(tmp_path / "a")])
    assert cfg.estimator.options == {}  # the estimator's own defaults
    assert estimator_for(cfg).describe()["recipe"] == "adamw"
    cfg, *_ = parse_config(["--target-flops", "400M", "--recipe", "efficientnet", "--output", str(tmp_path / "b")])
    assert cfg.estimator.options == {"recipe": "efficientnet"}
    assert estimator_for(cfg).describe()["recipe"] == "efficientnet"


def _synthetic_table(path, space_name="mnasnet-b0"):
    """A complete table for the whole space with made-up seconds (1 us per 1000 output channels x pixels)."""
    from nas.latency import BACKENDS, new_table, space_entries

    space = SPACES[space_name]
    entries = space_entries(space)
    t = new_table(space=space_name, resolution=space.base.resolution, backend=BACKENDS["torch"], threads=1,
                  warmup=1, runs=1, expected_entries=len(entries), fit_networks=0)
    t.entries.update({k: 1e-9 * e.out_channels * e.resolution ** 2 + 1e-6 for k, e in entries.items()})
    t.overhead = 1e-3
    t.save(path)
    return t


def test_latency_table_predicts_every_candidates_latency(tmp_path):
    from nas.latency import predict

    table = _synthetic_table(tmp_path / "lat.json")
    b0 = predict(load_preset("efficientnet-b0"), table)
    cfg = _cfg(tmp_path, metric="latency", target=b0, budget=5,
               latency=LatencyConfig(runs=1, warmup=0, table=str(tmp_path / "lat.json")))
    res = run_search(cfg, estimator=FakeEstimator())
    done = _complete(res)
    assert len(done) == 5
    for r in done:  # the search's latency is the table's prediction, not a measurement
        spec = SPACES["mnasnet-b0"].decode({k[len("param_"):]: v for k, v in r.items() if k.startswith("param_")})
        assert r["latency"] == pytest.approx(predict(spec, table), rel=1e-12)
    assert res.reference["efficientnet-b0"]["cost"] == pytest.approx(b0, rel=1e-12)
    assert not (tmp_path / "out" / "latency_cache.json").exists()  # nothing was measured


def test_cli_refuses_a_latency_target_below_the_tables_fastest_member(tmp_path, capsys):
    from nas.latency import fastest_member, predict

    table = _synthetic_table(tmp_path / "lat.json")
    fastest = predict(fastest_member(SPACES["mnasnet-b0"], table), table)
    rc = cli_main(["--target-latency", f"{fastest * 0.5}", "--latency-table", str(tmp_path / "lat.json"),
                   "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "below the fastest member" in err and not (tmp_path / "out").exists()


def test_cli_with_a_latency_table_measures_the_best_as_the_table_was(tmp_path):
    from nas.latency import predict

    table = _synthetic_table(tmp_path / "lat.json")
    target = predict(load_preset("efficientnet-b0"), table)
    out = tmp_path / "out"
    rc = cli_main(["--target-latency", repr(target), "--latency-table", str(tmp_path / "lat.json"),
                   "--estimator", "proxy:params", "--budget", "2", "--output", str(out), "--no-progress"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["latency"] > 0  # predicted (the synthetic table's made-up seconds)
    assert 0 < summary["best_latency_measured"] < 10  # measured once, on the table's backend
    assert summary["best_latency_measured"] != summary["best"]["latency"]


def test_the_training_estimator_takes_a_device():
    from nas.data import load_dataset
    from nas.estimators import estimator_options, make_estimator

    assert "device" in estimator_options("train")
    est = make_estimator("train", load_dataset("sample").subset(64, 32), resolution=16, device="cpu")
    e = est(load_preset("efficientnet-b0"))
    assert not e.failed and 0 <= e.score <= 1 and est.describe()["device"] == "cpu"
