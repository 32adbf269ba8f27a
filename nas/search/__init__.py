"""The search engine behind ``nas-search``: space x estimator x reward, driven by an Optuna study.

One set-up, several backends.  :func:`open_session` builds everything a search
needs once, as a :class:`SearchSession` (space, estimator, reward, objective
directions, pruning rule, cost function, accuracy map, storage, study, the
objective and the result collection); a backend runs its trials:

* :func:`run_local` (:mod:`nas.search.engine`): the ask/tell loop in this process;
  :func:`run_search` opens the session of a configuration and runs it so;
* :func:`nas.search.workers.run_workers`: N local processes on one study;
* :func:`nas.search.ray_backend.run_ray`: Ray Tune trials.

Worker processes rebuild the session from the same :class:`SearchConfig` with the
same :func:`open_session`.  Every backend returns a :class:`SearchResult`;
:func:`write_outputs` writes best.json, trials.csv, summary.json and pareto.png,
each atomically.  The modules, bottom up: :mod:`~nas.search.config` (what to do),
:mod:`~nas.search.objective` (one trial), :mod:`~nas.search.session` (the set-up),
:mod:`~nas.search.engine`, :mod:`~nas.search.workers`, :mod:`~nas.search.ray_backend`
(the backends), :mod:`~nas.search.outputs` (the files).

The budget counts COMPLETE trials: rerunning the same configuration on the same
storage runs only the remainder.
"""
from __future__ import annotations

from .config import (CALIBRATION_SAMPLES, DEFAULT_BUDGET, TRAIN_BUDGET, EstimatorConfig, LatencyConfig, SearchConfig,
                     StorageConfig, default_budget)
from .engine import run_local, run_search
from .objective import (COST_METRICS, TRANSIENT_FAILURES, TrialFailed, make_cost_fn, make_objective, memo_from_study,
                        run_trial)
from .outputs import best_spec, pareto_png, summary_dict, summary_text, trials_csv, write_outputs
from .session import (JOURNAL_NAME, LATENCY_CACHE, MAX_FAILURE_FACTOR, REFERENCES, SearchResult, SearchSession,
                      directions_for, estimator_for, open_session, open_study, recover_stale_trials, reference_specs)

__all__ = ["SearchConfig", "EstimatorConfig", "LatencyConfig", "StorageConfig", "SearchSession", "SearchResult",
           "open_session", "run_local", "run_search", "write_outputs", "summary_dict", "summary_text", "trials_csv",
           "best_spec", "pareto_png", "make_objective", "make_cost_fn", "run_trial", "TrialFailed", "open_study",
           "recover_stale_trials", "memo_from_study", "estimator_for", "reference_specs", "directions_for",
           "default_budget", "COST_METRICS", "TRANSIENT_FAILURES", "DEFAULT_BUDGET", "TRAIN_BUDGET",
           "CALIBRATION_SAMPLES", "JOURNAL_NAME", "LATENCY_CACHE", "MAX_FAILURE_FACTOR", "REFERENCES"]
