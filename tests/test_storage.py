"""nas.storage: one way to name an Optuna storage (search and scaling grid alike), and the one
name, ``reason``, for why a trial failed (the grid's journals once called it ``failure``)."""
from __future__ import annotations

import json

import optuna
import pytest

from nas.presets import load_preset
from nas.storage import optuna_storage


def test_storage_names():
    assert optuna_storage(None) is None and optuna_storage(":memory:") is None  # in memory
    assert optuna_storage("sqlite:///x.db") == "sqlite:///x.db"  # a URL goes to Optuna as is
    obj = object()
    assert optuna_storage(obj) is obj


def test_a_path_is_a_journal_file_in_a_created_folder(tmp_path):
    from optuna.storages import JournalStorage

    path = tmp_path / "new" / "study.journal"
    storage = optuna_storage(path)
    assert isinstance(storage, JournalStorage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert path.stat().st_size > 0


def _grid_evaluator(fail_first: bool):
    calls = []

    def evaluate(spec):
        calls.append(spec.fingerprint())
        if fail_first and len(calls) == 1:
            return {"accuracy": None, "failed": True, "reason": "loss is nan"}
        return {"accuracy": 0.5 + spec.n_layers / 1000, "failed": False}

    return evaluate, calls


@pytest.mark.parametrize("old_name", [False, True], ids=["reason", "failure"])
def test_the_grid_records_reason_and_reads_old_journals(tmp_path, old_name):
    from scaling.grid import run_grid_search

    base = load_preset("efficientnet-b0").replace(resolution=16)
    ev, calls = _grid_evaluator(fail_first=True)
    first = run_grid_search(base, ev, output_dir=tmp_path, max_candidates=3, progress=False)
    failed = [c for c in first.candidates if c["state"] == "FAIL"]
    assert [c["reason"] for c in failed] == ["loss is nan"] and len(calls) == 3
    journal = tmp_path / "grid.journal"
    assert '"reason": "loss is nan"' in journal.read_text() or '"reason":"loss is nan"' in journal.read_text()
    if old_name:  # a journal written before the rename
        text = journal.read_text()
        lines = [json.loads(ln) for ln in text.splitlines()]
        for op in lines:
            if "loss is nan" in json.dumps(op.get("user_attr", {})):
                op["user_attr"] = {"failure": op["user_attr"]["reason"]}
        journal.write_text("".join(json.dumps(op) + "\n" for op in lines))
        assert '"failure"' in journal.read_text()
    # resume: the failed candidate is a result (not trained again), its reason is kept
    ev2, calls2 = _grid_evaluator(fail_first=False)
    again = run_grid_search(base, ev2, output_dir=tmp_path, max_candidates=3, progress=False)
    assert calls2 == []
    assert [c["reason"] for c in again.candidates if c["state"] == "FAIL"] == ["loss is nan"]


def _optunas_own_journal(path):
    """Optuna's JournalStorage on the file backend of the installed version (what optuna-dashboard opens)."""
    from optuna.storages import JournalStorage

    try:
        from optuna.storages.journal import JournalFileBackend  # Optuna >= 4.0
    except ImportError:  # Optuna 3.x
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return JournalStorage(JournalFileBackend(str(path)))


def test_a_searchs_study_journal_opens_with_optunas_own_journal_storage(tmp_path):
    """docs/search.md: `optuna-dashboard runs/<run>/study.journal` shows a search; the journal is Optuna's own
    format, read back here with Optuna's classes alone: one study, its trials, values and parameters."""
    import csv

    from nas.cli.search import main

    out = tmp_path / "run"
    assert main(["--target-flops", "400M", "--estimator", "proxy:flops", "--budget", "4", "--strategy", "random",
                 "--output", str(out), "--no-progress"]) == 0
    storage = _optunas_own_journal(out / "study.journal")
    summaries = optuna.get_all_study_summaries(storage)
    assert len(summaries) == 1
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    summary = json.loads((out / "summary.json").read_text())
    assert len(complete) == summary["n_trials_complete"] == 4
    rows = {int(r["number"]): r for r in csv.DictReader(open(out / "trials.csv"))}
    for t in complete:
        assert t.value == pytest.approx(float(rows[t.number]["reward"]))
        assert rows[t.number]["param_s1_op"] == str(t.params["s1_op"])
    assert study.best_value == pytest.approx(summary["best"]["reward"])
