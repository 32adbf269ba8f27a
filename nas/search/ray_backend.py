"""``nas-search --backend ray``: the same search, its trials run as Ray Tune trials.

Ray is imported only inside these functions, so ``import nas.search.ray_backend`` is cheap.

How it maps onto the local engine (:mod:`nas.search`):

* **set-up** in the driver: the caller's session (:func:`nas.search.session.open_session`,
  role ``owner``: study, stale-trial recovery, references, calibration, B0 enqueued).
* **trials**: a ``Tuner`` whose search algorithm is Ray's ``OptunaSearch``
  wrapping *our* sampler (``--strategy``), over the space's own Optuna
  distributions, with the same directions, on *our* persistent study (same
  storage, same study name).  Every Tune trial is therefore an Optuna trial in
  the journal, numbered by the storage, and a rerun resumes from it as the local
  backend does.  Each Ray worker process rebuilds the session from the same
  configuration (role ``trial``: no study, the driver's stored reference scores
  given), and the trial function replays the chosen parameters through the
  session's objective (a ``FixedTrial``), so cost, estimate, reward, failure memo
  and user attributes are computed by the same code.  Where the session says
  ``early_stopping`` (the training estimator, several epochs), an ASHA scheduler
  stops weak trials early (they are recorded PRUNED, as the local pruner's would be).
* **collect** in the driver: the session's result, so the caller writes exactly
  the local backend's files with :func:`nas.search.write_outputs`.

Tune's own files go to a temporary folder that is removed afterwards; the
output folder holds only the search's files.  Budget: Tune runs
``budget - complete`` samples; failed or pruned ones are replaced in further
rounds until the budget of COMPLETE trials is met or the failure limit
(the session's ``max_attempts``) is reached.

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

from .config import SearchConfig
from .objective import TrialFailed, memo_from_study
from .session import SearchResult, SearchSession, open_session, recover_stale_trials

__all__ = ["run_ray", "RESULT_KEYS"]

# trial user attributes carried from the Tune trial back into the Optuna study
RESULT_KEYS = ("fingerprint", "flops", "latency", "score", "accuracy", "reward", "reason", "estimate_seconds")

_SESSIONS: dict = {}  # per Ray worker process: the session of the run in progress, keyed by the run


def _session(ctx: dict) -> SearchSession:
    """The session of this run, rebuilt once per Ray worker process (role ``trial``)."""
    key = ctx["key"]
    if key not in _SESSIONS:
        import torch

        torch.set_num_threads(ctx["threads"])
        _SESSIONS.clear()
        _SESSIONS[key] = open_session(SearchConfig.from_dict(ctx["config"]), role="trial", setup=ctx["setup"])
    return _SESSIONS[key]


def _trial_fn(config: dict, ctx: dict) -> None:
    """The Tune trial: one architecture through the session's objective."""
    import optuna
    from ray import tune

    session = _session(ctx)
    for fp, known in ctx["known"].items():
        session.memo.setdefault(fp, known)
    cost_attr = "latency" if session.config.metric == "latency" else "flops"
    acc_map, reward = session.accuracy_map, session.reward

    class TuneTrial(optuna.trial.FixedTrial):
        """A FixedTrial whose per-epoch reports reach Tune (ASHA decides; Tune stops the function)."""

        def report(self, value, step):
            c = self.user_attrs.get(cost_attr)
            acc = acc_map(value)
            tune.report({"reward": reward(acc, c), "accuracy": acc, "cost": c, "epoch": step, "final": False})

        def should_prune(self):
            return False

    trial = TuneTrial(dict(config))
    out: dict = {"final": True}
    try:
        values = session.objective(trial)
        if session.multi:
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
    if session.multi and "cost" not in out and cost_attr in out:
        out["cost"] = out[cost_attr]
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


def run_ray(session: SearchSession, *, workers: int | None = None, address: str | None = None,
            cpus_per_trial: float = 1.0, threads: int | None = None, started: float | None = None) -> SearchResult:
    """Run (or resume) the search of ``session`` (role ``owner``) as Ray Tune trials; writes only the study.

    ``workers``: concurrent trials (and, without ``address``, the CPUs given to a
    local Ray, ``workers * cpus_per_trial``); None: as many as the CPUs allow
    (all of this machine's, or the cluster's).  ``address``: an existing cluster
    (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``).  Every Ray worker rebuilds
    the session from ``session.config`` (use ``EstimatorConfig.factory`` for a
    custom estimator).  ``started``: a ``time.perf_counter()`` reading the result's
    seconds count from (default: now).
    """
    import logging

    from optuna.trial import TrialState

    t_start = time.perf_counter() if started is None else started
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if not cpus_per_trial > 0:
        raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial}")
    if session.role != "owner":
        raise ValueError(f"run_ray needs the owner's session, not a {session.role}'s")
    t0 = time.perf_counter()

    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from ..samplers import make_sampler

    cfg, study = session.config, session.study
    if threads is None:
        threads = max(1, int(cpus_per_trial)) if session.estimator.kind == "train" else 1
    # failed trials report no reward (the searcher records them FAIL with their reason); read by the driver
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no progress tables on the user's terminal
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TensorBoard files per trial
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    tmp = tempfile.mkdtemp(prefix="nas-ray-")
    started_ray = False
    ray_init_seconds = None
    stopped, rounds = None, 0
    try:
        if not ray.is_initialized():
            ti = time.perf_counter()
            if address:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            else:
                ncpu = math.ceil(workers * cpus_per_trial) if workers else (os.cpu_count() or 1)
                ray.init(num_cpus=max(1, ncpu), include_dashboard=False,
                         _temp_dir=os.path.join(tmp, "ray"), logging_level=logging.ERROR, log_to_driver=False)
            ray_init_seconds = time.perf_counter() - ti
            started_ray = True
        storage_obj = study._storage
        key = f"{session.storage}|{session.study_name}|{os.getpid()}|{time.time()}"
        failed_before = session.count(TrialState.FAIL, TrialState.PRUNED)
        modes = [d[:3] for d in session.directions]  # Tune's names: maximize -> max, minimize -> min
        while True:
            complete = session.count(TrialState.COMPLETE)
            failed = session.count(TrialState.FAIL, TrialState.PRUNED) - failed_before
            if complete >= cfg.budget:
                break
            if failed >= session.max_attempts:
                stopped = f"stopped after {failed} failed or pruned attempts"
                break
            rounds += 1
            searcher = _searcher_class()(
                space=session.space.distributions(), metric=["accuracy", "cost"] if session.multi else "reward",
                mode=modes if session.multi else modes[0],
                sampler=make_sampler(cfg.strategy, seed=cfg.seed + rounds - 1),
                study_name=session.study_name, storage=storage_obj)
            scheduler = None
            if session.early_stopping:
                epochs = getattr(session.estimator, "epochs", 1)
                scheduler = ASHAScheduler(metric="reward", mode="max", max_t=int(math.ceil(epochs)) + 1,
                                          grace_period=1, reduction_factor=2)
            ctx = {"key": key, "config": cfg.to_dict(), "threads": threads, "setup": session.setup,
                   "known": memo_from_study(study)}
            trainable = tune.with_resources(tune.with_parameters(_trial_fn, ctx=ctx), {"cpu": cpus_per_trial})
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                            num_samples=min(cfg.budget - complete, session.max_attempts - failed),
                                            max_concurrent_trials=workers, reuse_actors=True),
                run_config=tune.RunConfig(storage_path=os.path.join(tmp, "tune"), name=f"round{rounds}", verbose=0,
                                          log_to_file=True))
            tuner.fit()
    except KeyboardInterrupt:
        stopped = "interrupted"
    finally:
        if started_ray:
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    seconds_tune = time.perf_counter() - t0
    # Tune is done: a trial still RUNNING in the study was cut off, failed and queued again
    recover_stale_trials(study)
    return session.result(seconds=time.perf_counter() - t_start, interrupted=stopped == "interrupted",
                          stopped_reason=None if stopped == "interrupted" else stopped,
                          extra={"backend": "ray", "workers": workers, "address": address,
                                 "cpus_per_trial": cpus_per_trial, "ray_init_seconds": ray_init_seconds,
                                 "tune_seconds": round(seconds_tune, 2), "tune_rounds": rounds})
