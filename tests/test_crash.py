"""Crash safety (issue 7, part 3): ``kill -9`` a real search at several points, rerun the same
command, and check the study: COMPLETE trials == budget, unique trial numbers, no finished trial
lost or changed, nothing left RUNNING.  The kill points are detected by reading the journal."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import _fake_estimators as fe
from nas.search import JOURNAL_NAME, open_study

TESTS = str(pathlib.Path(__file__).parent)
CREATE_TRIAL, SET_STATE, COMPLETE = 4, 6, 1  # optuna's journal op codes and TrialState.COMPLETE


@pytest.fixture
def out(tmp_path):
    d, cleanup = fe.fast_tmp_dir(tmp_path, "crash")
    yield d
    cleanup()


def _journal_state(path: pathlib.Path) -> tuple[int, dict]:
    """(trials created, {trial_id: values of COMPLETE trials}) from the raw journal."""
    created, done = 0, {}
    if not path.exists():
        return 0, {}
    for line in path.read_bytes().splitlines():
        try:
            op = json.loads(line)
        except ValueError:
            continue  # a torn line being written
        if op.get("op_code") == CREATE_TRIAL:
            created += 1
        elif op.get("op_code") == SET_STATE and op.get("state") == COMPLETE:
            done[op["trial_id"]] = op.get("values")
    return created, done


def _run_and_kill(cmd, journal, when, env=None, timeout=120.0):
    """Start ``cmd``; SIGKILL it once ``when(created, complete)`` holds; returns the COMPLETE map at the kill."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            created, done = _journal_state(journal)
            if when(created, len(done)):
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                return _journal_state(journal)[1]
            if p.poll() is not None:
                pytest.fail(f"the run ended before the kill point: rc {p.returncode}, {p.stderr.read()[-500:]!r}")
            time.sleep(0.01)
        pytest.fail("kill point not reached in time")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _final_check(journal, study_name, budget, kept: dict):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(str(journal), study_name, None, ["maximize"])
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert len([t for t in trials if t.state == TrialState.COMPLETE]) == budget
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    by_id = {t._trial_id: t for t in trials}
    for tid, values in kept.items():  # every trial finished before a kill is still there, unchanged
        assert by_id[tid].state == TrialState.COMPLETE and by_id[tid].values == values
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("reason", "").startswith("stale")
    return trials


def test_kill_9_nas_search_at_several_points_then_resume(out):
    budget = 8
    cmd = ["nas-search", "--target-flops", "400M", "--estimator", "proxy:params", "--strategy", "random",
           "--budget", str(budget), "--output", str(out), "--no-progress"]
    journal = out / JOURNAL_NAME
    kept: dict = {}
    for point in (0, 2, 5):
        # 0: as soon as the first trial exists (set-up done, B0 in flight); then after 2 and 5 complete
        kept.update(_run_and_kill(cmd, journal, lambda c, d, point=point: c > 0 and d >= point))
    assert len(kept) >= 5
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    # a lock left by a killed writer is removed at start-up, not waited out (Optuna warns after 10 s)
    assert "acquire the lock" not in r.stderr
    summary = json.loads((out / "summary.json").read_text())
    trials = _final_check(journal, summary["study_name"], budget, kept)
    assert summary["n_trials_complete"] == budget
    assert len([t for t in trials if t.state == TrialState.FAIL]) <= 3  # at most one stale trial per kill


def _children(pid: int) -> list[int]:
    kids = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


@pytest.mark.parametrize("via", ["api", "cli"])
def test_kill_9_the_parent_of_two_workers_then_resume(out, via):
    budget = 10 if via == "api" else 30
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]),
           "NAS_TEST_DELAY": "0.2"}
    code = ("from nas.search import EstimatorConfig, SearchConfig, open_session, write_outputs; "
            "from nas.search.workers import run_workers; "
            "cfg = SearchConfig(target=4e8, strategy='random', budget=%d, "
            "estimator=EstimatorConfig('fake', factory='_fake_estimators:slow_params')); "
            "res = run_workers(open_session(cfg, output=%r), 2); write_outputs(res, res.config.storage.output)"
            % (budget, str(out)))
    if via == "cli":  # the real command; proxy:params trials take milliseconds, hence the larger budget
        cmd = ["nas-search", "--target-flops", "400M", "--estimator", "proxy:params", "--strategy", "random",
               "--budget", str(budget), "--workers", "2", "--output", str(out), "--no-progress"]
    else:  # the API with a fake estimator that sleeps per trial
        cmd = [sys.executable, "-c", code]
    journal = out / JOURNAL_NAME
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.monotonic()
        while len(_journal_state(journal)[1]) < 3:
            assert p.poll() is None, p.stderr.read()[-800:]
            assert time.monotonic() - t0 < 120
            time.sleep(0.01)
        workers = _children(p.pid)
        assert len(workers) == 2
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    kept = _journal_state(journal)[1]
    deadline = time.monotonic() + 15
    while any(pathlib.Path(f"/proc/{w}").exists() and "Z" not in _proc_state(w) for w in workers):
        assert time.monotonic() < deadline, "workers outlived their killed parent"
        time.sleep(0.05)
    # the workers died with the parent: nothing more is written, so the resume is the only writer
    n_after_kill = _journal_state(journal)[0]
    time.sleep(0.3)
    assert _journal_state(journal)[0] == n_after_kill
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    name = json.loads((out / "summary.json").read_text())["study_name"]
    _final_check(journal, name, budget, kept)


def _proc_state(pid: int) -> str:
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_ctrl_c_with_two_workers_stops_cleanly_and_requeues(out):
    """SIGINT to nas-search --workers 2: exit 130, outputs for the best so far, in-flight trials
    FAIL ('interrupted') and queued again, no worker left behind."""
    cmd = ["nas-search", "--target-flops", "400M", "--estimator", "proxy:params", "--strategy", "random",
           "--budget", "100000", "--workers", "2", "--output", str(out), "--no-progress"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        t0 = time.monotonic()
        while len(_journal_state(out / JOURNAL_NAME)[1]) < 5:
            assert p.poll() is None and time.monotonic() - t0 < 120
            time.sleep(0.01)
        workers = _children(p.pid)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not [w for w in workers if _proc_state(w) not in ("Z", "X")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["n_trials_complete"] >= 5
    study = open_study(str(out / JOURNAL_NAME), summary["study_name"], None, ["maximize"])
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    for t in study.trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs["reason"] == "interrupted"
            if len(t.params) == len(t.distributions) == 42:  # fully sampled: queued to run again
                assert any(w.state == TrialState.WAITING and w.system_attrs.get("fixed_params") == t.params
                           for w in study.trials)
