"""``nas-search --backend ray``: the same search, its trials run as Ray Tune trials.

Ray is imported only inside these functions, so ``import nas.ray_backend`` is cheap.

How it maps onto the local engine (:mod:`nas.search`):

* **set-up** in the driver: :func:`nas.search.run_search` with a budget of 0
  (study, stale-trial recovery, references, calibration, B0 enqueued).
* **trials**: a ``Tuner`` whose search algorithm is Ray's ``OptunaSearch``
  wrapping *our* sampler (``--strategy``), over the space's own Optuna
  distributions, with the same directions, on *our* persistent study (same
  storage, same study name).  Every Tune trial is therefore an Optuna trial in
  the journal, numbered by the storage, and a rerun resumes from it as the local
  backend does.  The trial function replays the chosen parameters through
  :func:`nas.search.make_objective` (a ``FixedTrial``), so cost, estimate,
  reward, failure memo and user attributes are computed by the same code.
  With the training estimator and at least 2 epochs an ASHA scheduler stops
  weak trials early (they are recorded PRUNED, as the local pruner's would be).
* **collect** in the driver: ``run_search`` again builds the
  :class:`nas.search.SearchResult` from the study, so the caller writes exactly
  the local backend's files with :func:`nas.search.write_outputs`.

Tune's own files go to a temporary folder that is removed afterwards; the
output folder holds only the search's files.  Budget: Tune runs
``budget - complete`` samples; failed or pruned ones are replaced in further
rounds until the budget of COMPLETE trials is met or the failure limit
(``budget * MAX_FAILURE_FACTOR + 20`` attempts) is reached.

On a cluster (``address``), the driver must be able to write the storage (the
journal lives on the driver's disk; trial results flow back to the driver, which
alone writes the study), and every node needs this package installed.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from .search import JOURNAL_NAME, MAX_FAILURE_FACTOR, SearchConfig, SearchResult

__all__ = ["run_ray", "RESULT_KEYS"]

# trial user attributes carried from the Tune trial back into the Optuna study
RESULT_KEYS = ("fingerprint", "flops", "latency", "score", "accuracy", "reward", "reason", "estimate_seconds")

_CACHE: dict = {}  # per Ray worker process: (estimator, objective pieces) keyed by the run's settings


def _pieces(ctx: dict):
    """Estimator, space, reward, cost function of this run, built once per Ray worker process."""
    key = ctx["key"]
    if key not in _CACHE:
        import optuna
        import torch

        from search_spaces import get_space

        from .latency import LatencyMeter
        from .search import make_cost_fn

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        torch.set_num_threads(ctx["threads"])
        cfg = SearchConfig(**ctx["config"])
        if ctx.get("estimator_factory"):
            from .workers import _load_factory

            estimator = _load_factory(ctx["estimator_factory"])()
        else:
            from .search import estimator_for

            estimator = estimator_for(cfg)
        cost_fn = make_cost_fn(cfg.metric, LatencyMeter(threads=cfg.latency_threads))
        _CACHE.clear()
        _CACHE[key] = (cfg, estimator, get_space(cfg.space), cfg.reward(), cost_fn, {})
    return _CACHE[key]


def _trial_fn(config: dict, ctx: dict) -> None:
    """The Tune trial: one architecture through :func:`nas.search.make_objective`."""
    import optuna
    from ray import tune

    from .search import TrialFailed, make_objective

    cfg, estimator, space, reward, cost_fn, memo = _pieces(ctx)
    for fp, known in ctx["known"].items():
        memo.setdefault(fp, known)
    acc_map = ctx["accuracy_map"]

    class TuneTrial(optuna.trial.FixedTrial):
        """A FixedTrial whose per-epoch reports reach Tune (ASHA decides; Tune stops the function)."""

        def report(self, value, step):
            attrs = self.user_attrs
            c = attrs.get("latency") if cfg.metric == "latency" else attrs.get("flops")
            acc = acc_map(value)
            tune.report({"reward": reward(acc, c), "accuracy": acc, "cost": c, "epoch": step, "final": False})

        def should_prune(self):
            return False

    trial = TuneTrial(dict(config))
    objective = make_objective(space, estimator, reward, acc_map, cost_fn, multi_objective=ctx["multi"], memo=memo)
    out: dict = {"final": True}
    try:
        values = objective(trial)
        if ctx["multi"]:
            out["accuracy"], out["cost"] = values
        else:
            out["reward"] = values
    except optuna.TrialPruned:
        out.update(final=False, pruned=True)
    except TrialFailed as e:
        out.update(failed=True, reason=str(e))
    except Exception as e:  # a failing trial is a result, not a Tune error (Tune would retry or abort)
        out.update(failed=True, reason=f"{type(e).__name__}: {e}".splitlines()[0][:500])
    for k in RESULT_KEYS:
        if k in trial.user_attrs and k not in out:
            out[k] = trial.user_attrs[k]
    if ctx["multi"] and "cost" not in out and "flops" in out:
        out["cost"] = out.get("latency") if cfg.metric == "latency" else out["flops"]
    tune.report(out)


def _searcher_class():
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class NasOptunaSearch(OptunaSearch):
        """OptunaSearch that records our attributes and the real state (FAIL with reason, PRUNED) per trial."""

        def on_trial_result(self, trial_id, result):
            # a failed or pruned trial's last result carries no metric (nothing to report to Optuna)
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            if all(m in result for m in metrics):
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id, result=None, error=False):
            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            ot_trial = self._ot_trials[trial_id]
            result = result or {}
            for k in RESULT_KEYS:
                v = result.get(k)
                if v is not None and not (isinstance(v, float) and math.isnan(v)):
                    ot_trial.set_user_attr(k, v)
            if result.get("failed") or error:
                if not result.get("reason"):
                    ot_trial.set_user_attr("reason", "ray: the trial raised (see Ray's logs)")
                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
            elif not result.get("final"):
                self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            else:
                vals = [result[m] for m in self.metric] if isinstance(self.metric, list) else result[self.metric]
                self._ot_study.tell(ot_trial, vals)
            self._completed_trials.add(trial_id)

    return NasOptunaSearch


def run_ray(cfg: SearchConfig, *, workers: int | None = None, address: str | None = None, cpus_per_trial: float = 1.0,
            output: str | Path | None = None, dataset=None, estimator_factory: str | None = None,
            threads: int | None = None, log: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or resume) ``cfg`` as Ray Tune trials; returns the result and writes only the study.

    ``workers``: concurrent trials (and, without ``address``, the CPUs given to a
    local Ray, ``workers * cpus_per_trial``); None: as many as the CPUs allow
    (all of this machine's, or the cluster's).  ``address``: an existing cluster
    (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).  ``estimator_factory``
    (``"module:function"``) replaces ``cfg.estimator`` everywhere (tests).
    """
    import logging

    import optuna
    from optuna.trial import TrialState

    from .search import memo_from_study, open_study, run_search
    from .workers import _accuracy_map, _load_factory, repair_journal

    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not cpus_per_trial > 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial}")
    out = Path(output or cfg.output or ".")
    cfg = replace(cfg, output=str(out))
    storage = cfg.storage or str(out / JOURNAL_NAME)
    if "://" not in storage:
        repair_journal(storage)
    study_name = cfg.study_name or cfg.default_study_name()
    if estimator_factory:
        estimator = _load_factory(estimator_factory)()
    else:
        from .search import estimator_for

        estimator = estimator_for(cfg, dataset)

    # set-up in the driver, with the local engine's code
    run_search(replace(cfg, budget=0), output=out, estimator=estimator, log=log)
    t0 = time.perf_counter()

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from .samplers import MULTI_OBJECTIVE, make_sampler
    from search_spaces import get_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    multi = cfg.strategy in MULTI_OBJECTIVE
    directions = ["maximize", "minimize"] if multi else ["maximize"]
    study = open_study(storage, study_name, None, directions)
    acc_map = _accuracy_map(study, estimator.kind)
    space = get_space(cfg.space)
    if threads is None:
        threads = max(1, int(cpus_per_trial)) if estimator.kind == "train" else 1
    # failed trials report no reward (the searcher records them FAIL with their reason); read by the driver
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables on the user's terminal
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    tmp = Path(tempfile.mkdtemp(prefix="nas-ray-"))
    started = False
    ray_seconds = {"init": None}
    stopped, rounds = None, 0
    try:
        if not ray.is_initialized():
            ti = time.perf_counter()
            if address:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ncpu = math.ceil(workers * cpus_per_trial) if workers else (os.cpu_count() or 1)
                ray.init(num_cpus=max(1, ncpu), include_dashboard=False,
                         _temp_dir=str(tmp / "ray"), logging_level=logging.ERROR, log_to_driver=False)
            ray_seconds["init"] = time.perf_counter() - ti
            started = True
        storage_obj = study._storage
        key = f"{storage}|{study_name}|{os.getpid()}|{time.time()}"
        max_attempts = int(cfg.budget * MAX_FAILURE_FACTOR) + 20
        failed_before = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED)))
        while True:
            complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED))) - failed_before
            if complete >= cfg.budget:
                break
            if failed >= max_attempts:
                stopped = f"stopped after {failed} failed or pruned attempts"
                break
            rounds += 1
            searcher = _searcher_class()(
                space=space.distributions(), metric=["accuracy", "cost"] if multi else "reward",
                mode=["max", "min"] if multi else "max", sampler=make_sampler(cfg.strategy, seed=cfg.seed + rounds - 1),
                study_name=study_name, storage=storage_obj)
            scheduler = None
            if estimator.kind == "train" and not multi and cfg.epochs >= 2:
                scheduler = ASHAScheduler(metric="reward", mode="max", max_t=int(math.ceil(cfg.epochs)) + 1,
                                          grace_period=1, reduction_factor=2)
            ctx = {"key": key, "config": asdict(cfg), "threads": threads, "multi": multi,
                   "accuracy_map": acc_map, "known": memo_from_study(study), "estimator_factory": estimator_factory}
            trainable = tune.with_resources(tune.with_parameters(_trial_fn, ctx=ctx), {"cpu": cpus_per_trial})
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                            num_samples=min(cfg.budget - complete, max_attempts - failed),
                                            max_concurrent_trials=workers, reuse_actors=True),
                run_config=tune.RunConfig(storage_path=str(tmp / "tune"), name=f"round{rounds}", verbose=0,
                                          log_to_file=True))
            tuner.fit()
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        if started:
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    seconds_tune = time.perf_counter() - t0

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    res = run_search(replace(cfg, budget=min(cfg.budget, complete)), output=out, estimator=estimator, log=log)
    res.config = cfg
    res.interrupted = stopped == "interrupted"
    res.stopped_reason = None if stopped == "interrupted" else stopped
    res.extra = {**res.extra, "backend": "ray", "workers": workers, "address": address,
                 "cpus_per_trial": cpus_per_trial, "ray_init_seconds": ray_seconds["init"],
                 "tune_seconds": round(seconds_tune, 2), "tune_rounds": rounds}
    return res
