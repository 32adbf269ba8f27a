"""The one set-up of a search: :func:`open_session` builds a :class:`SearchSession`.

A session holds everything one search needs, built once: the space, the
estimator, the reward and the objective directions, the cost function (with its
latency meter), the pruning rule, the failure limit, the storage and the study,
the references' scores and the accuracy map fitted on them, the failure/score
memo, the objective, and the result collection (:meth:`SearchSession.result`).
Every backend takes a session: the single-process loop
(:func:`nas.search.engine.run_local`), the local workers
(:func:`nas.search.workers.run_workers`) and Ray
(:func:`nas.search.ray_backend.run_ray`).  Their child processes rebuild it from
the same configuration with the same function, in another role:

* ``owner`` (the process that runs the search): repairs a journal a killed run
  left torn, opens or creates the study, records the configuration, fails and
  re-queues trials left RUNNING by a killed run, scores the references and the
  proxy calibration sample (stored in the study, so a resume reuses them) and,
  in a fresh study, enqueues EfficientNet-B0 (a member of ``mnasnet-b0``), so the
  best found is never worse than B0 under the same estimator and reward;
* ``worker`` (a local worker process): opens the owner's study with its own
  sampler seed (``seed + worker``) and reads the stored scores;
* ``trial`` (a Ray trial process, possibly on another machine): no study; the
  owner's stored scores come as ``setup``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from ..reward import IdentityMap, ProxyMap, Reward
from ..spec import Spec
from ..storage import is_journal_path, optuna_storage, repair_journal
from .config import SearchConfig
from .objective import make_cost_fn, make_objective, memo_from_study, run_trial

__all__ = ["SearchSession", "SearchResult", "open_session", "open_study", "recover_stale_trials", "estimator_for",
           "load_factory", "reference_specs", "directions_for", "early_stopping", "ROLES", "JOURNAL_NAME",
           "LATENCY_CACHE", "MAX_FAILURE_FACTOR", "REFERENCES"]

JOURNAL_NAME = "study.journal"
LATENCY_CACHE = "latency_cache.json"
REFERENCES = ("efficientnet-b0", "mobilenet-v2")
MAX_FAILURE_FACTOR = 1.0  # stop after budget * factor + 20 failed/pruned attempts (a sampler stuck on failures)
ROLES = ("owner", "worker", "trial")


@dataclass
class SearchResult:
    config: SearchConfig
    study_name: str
    storage: str
    rows: list[dict]  # one per trial
    best: dict | None
    reference: dict  # name -> row-like dict
    pareto: list[dict]
    n_complete: int
    n_failed: int
    interrupted: bool
    seconds: float
    accuracy_map: dict
    estimator: dict
    stopped_reason: str | None = None
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------- pieces


def reference_specs() -> dict[str, Spec]:
    from ..presets import load_preset

    return {n: load_preset(n) for n in REFERENCES}


def load_factory(ref: str) -> Callable:
    """``"module:function"`` -> the function."""
    import importlib

    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


def estimator_for(cfg: SearchConfig, dataset=None):
    """The estimator ``cfg`` names, with its options; the data is loaded from ``cfg.estimator.data`` unless given."""
    est = cfg.estimator
    if est.factory:
        return load_factory(est.factory)()
    from ..data import load_dataset
    from ..estimators import make_estimator

    if dataset is None:
        dataset = load_dataset(est.data, seed=cfg.seed)
    return make_estimator(est.name, dataset, seed=cfg.seed, **est.options)


def directions_for(strategy: str) -> list[str]:
    """Accuracy up; a multi-objective strategy also minimizes the cost."""
    from ..samplers import MULTI_OBJECTIVE

    return ["maximize", "minimize"] if strategy in MULTI_OBJECTIVE else ["maximize"]


def open_study(storage, study_name: str, sampler, directions: list[str], pruner=None):
    """Create or load (``load_if_exists``) the study; ``storage`` as :func:`nas.storage.optuna_storage` takes it."""
    import optuna

    study = optuna.create_study(storage=optuna_storage(storage), study_name=study_name, sampler=sampler,
                                pruner=pruner, directions=directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != list(directions):
        raise ValueError(f"study {study_name!r} exists with directions "
                         f"{[d.name.lower() for d in study.directions]}, not {directions}")
    return study


def recover_stale_trials(study) -> int:
    """Mark RUNNING trials FAIL (reason ``stale``) and re-queue their parameters.

    Only while no other process runs trials of the study: with several live
    workers a RUNNING trial may be someone else's.
    """
    from optuna.trial import TrialState

    n = 0
    waiting = [t.params for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))]
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "reason", "stale: the process running it stopped")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params and len(t.params) == len(t.distributions) and t.params not in waiting:
            study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
            waiting.append(t.params)
        n += 1
    return n


def _score_references(study, space, estimator, cost_fn, n_calibration: int) -> dict:
    """Raw scores of the references and of the calibration sample, stored in the study (resume reuses them)."""
    import random

    stored = study.user_attrs.get("references")
    if isinstance(stored, dict) and all(n in stored for n in REFERENCES):
        refs = stored
    else:
        refs = {}
        for name, spec in reference_specs().items():
            try:
                c = cost_fn(spec)
            except LookupError as e:  # a latency table covers its space: MobileNetV2 (relu6) is not a member
                from ..cost import cost

                refs[name] = {"score": None, "failed": True, "reason": f"no cost: {e}".splitlines()[0][:300],
                              "flops": float(cost(spec).flops), "latency": None, "cost": None,
                              "fingerprint": spec.fingerprint()}
                continue
            e = estimator(spec)
            refs[name] = {"score": e.score, "failed": e.failed, "reason": e.reason, "flops": c["flops"],
                          "latency": c["latency"], "cost": c["cost"], "fingerprint": spec.fingerprint()}
        study.set_user_attr("references", refs)
    calib: list = []
    if estimator.kind == "proxy":
        stored = study.user_attrs.get("calibration")
        if isinstance(stored, list) and stored:
            calib = stored
        else:
            rng = random.Random(12345)  # fixed: the map must not depend on the search seed
            for _ in range(n_calibration):
                spec = space.decode(space.sample(rng))
                e = estimator(spec)
                if not e.failed:
                    calib.append([e.score, cost_fn(spec)["cost"]])
            study.set_user_attr("calibration", calib)
    return {"references": refs, "calibration": calib}


def _stored_setup(study) -> dict:
    refs = study.user_attrs.get("references")
    if not isinstance(refs, dict) or not all(n in refs for n in REFERENCES):
        raise RuntimeError(f"study {study.study_name!r} has no reference scores: its owner did not set it up")
    return {"references": refs, "calibration": study.user_attrs.get("calibration") or []}


def _accuracy_map(kind: str, setup: dict):
    """A proxy's raw score mapped to an accuracy-like number, anchored at B0; a training estimator's is one."""
    if kind != "proxy":
        return IdentityMap()
    b0 = setup["references"]["efficientnet-b0"]
    if b0["failed"]:
        raise RuntimeError(f"the estimator failed on EfficientNet-B0: {b0['reason']}")
    calib = setup["calibration"]
    return ProxyMap.fit(b0["score"], [s for s, _ in calib], [c for _, c in calib])


def _trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        u = t.user_attrs
        rows.append({"number": t.number, "state": t.state.name, **{f"param_{k}": v for k, v in t.params.items()},
                     "score": u.get("score"), "accuracy": u.get("accuracy"), "flops": u.get("flops"),
                     "latency": u.get("latency"), "reward": u.get("reward"), "fingerprint": u.get("fingerprint"),
                     "reason": u.get("reason") or (t.system_attrs.get("fail_reason") if t.state.name == "FAIL" else None),
                     "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
                     if t.datetime_complete and t.datetime_start else None})
    return rows


def _pareto(rows: list[dict], metric: str) -> list[dict]:
    key = "latency" if metric == "latency" else "flops"
    pts = [r for r in rows if r["state"] == "COMPLETE" and r["accuracy"] is not None and r[key] is not None]
    front = []
    for r in pts:
        dominated = any((o[key] <= r[key] and o["accuracy"] >= r["accuracy"]) and
                        (o[key] < r[key] or o["accuracy"] > r["accuracy"]) for o in pts)
        if not dominated:
            front.append(r)
    # one row per architecture, cheapest first
    seen, out = set(), []
    for r in sorted(front, key=lambda r: (r[key], -r["accuracy"])):
        if r["fingerprint"] not in seen:
            seen.add(r["fingerprint"])
            out.append(r)
    return out


def early_stopping(estimator, multi: bool) -> bool:
    """Multi-fidelity: with several training epochs, weak trials are stopped early (Optuna's median
    pruner locally, ASHA under Ray); with one epoch there is nothing left to save."""
    return estimator.kind == "train" and getattr(estimator, "epochs", 1) > 1 and not multi


# ---------------------------------------------------------------- the session


@dataclass(eq=False)
class SearchSession:
    """Everything one search needs (see the module docstring); made by :func:`open_session` only."""

    config: SearchConfig  # with ``storage.output`` resolved
    role: str
    space: Any
    reward: Reward
    directions: list[str]
    estimator: Any
    cost_fn: Callable[[Spec], dict]
    latency_meter: Any  # what cost_fn measures latency with (nas.latency.LatencyMeter or TablePredictor)
    storage: str  # a URL, ":memory:" or the journal's path
    study_name: str
    study: Any  # None in a trial process
    setup: dict  # {"references": {name: raw score, cost, ...}, "calibration": [[score, cost], ...]}
    accuracy_map: Any
    reference: dict  # name -> the references' rows (accuracy and reward under this search's map and reward)
    memo: dict
    objective: Callable = field(init=False)

    def __post_init__(self):
        self.objective = make_objective(self.space, self.estimator, self.reward, self.accuracy_map, self.cost_fn,
                                        multi_objective=self.multi, memo=self.memo)

    @property
    def output(self) -> Path:
        return Path(self.config.storage.output)

    @property
    def multi(self) -> bool:
        return len(self.directions) > 1

    @property
    def early_stopping(self) -> bool:
        return early_stopping(self.estimator, self.multi)

    @property
    def max_attempts(self) -> int:
        """Failed or pruned attempts after which a search stops (a sampler stuck on failures)."""
        return int(self.config.budget * MAX_FAILURE_FACTOR) + 20

    def run_trial(self, trial) -> str:
        """One asked trial through the objective, told to the study (:func:`nas.search.objective.run_trial`)."""
        return run_trial(self.study, trial, self.objective, len(self.space.param_names))

    def count(self, *states) -> int:
        return len(self.study.get_trials(deepcopy=False, states=states))

    def best_reward(self) -> float | None:
        from optuna.trial import TrialState

        return max((t.user_attrs.get("reward", -math.inf) for t in self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,))), default=None)

    def result(self, *, seconds: float, interrupted: bool = False, stopped_reason: str | None = None,
               extra: dict | None = None) -> SearchResult:
        """The study's trials as a :class:`SearchResult` (what :mod:`nas.search.outputs` writes)."""
        cfg = self.config
        rows = _trial_rows(self.study)
        if hasattr(self.space, "key"):  # a benchmark's space: each trial's key in the benchmark's table
            for r in rows:
                choices = {k[6:]: v for k, v in r.items() if k.startswith("param_")}
                r["benchmark_key"] = self.space.key(choices) if len(choices) == len(self.space.param_names) else None
        complete = [r for r in rows if r["state"] == "COMPLETE" and r["reward"] is not None]
        best = max(complete, key=lambda r: (r["reward"], -r["number"])) if complete else None
        if best is not None:
            best = dict(best)
            best["spec"] = self.space.decode({k[6:]: v for k, v in best.items() if k.startswith("param_")})
        est = self.estimator
        return SearchResult(config=cfg, study_name=self.study_name, storage=self.storage, rows=rows, best=best,
                            reference=self.reference, pareto=_pareto(rows, cfg.metric),
                            n_complete=len([r for r in rows if r["state"] == "COMPLETE"]),
                            n_failed=len([r for r in rows if r["state"] == "FAIL"]), interrupted=interrupted,
                            seconds=seconds, accuracy_map=self.accuracy_map.to_dict(),
                            estimator=est.describe() if hasattr(est, "describe") else {"name": cfg.estimator.name},
                            stopped_reason=stopped_reason,
                            extra={"latency_threads": cfg.latency.threads if cfg.metric == "latency" else None,
                                   **(extra or {})})


def open_session(cfg: SearchConfig, *, output: str | Path | None = None, role: str = "owner", worker: int = 0,
                 setup: dict | None = None, estimator=None, dataset=None, latency_table=None,
                 log: Callable[[str], None] | None = None) -> SearchSession:
    """Build the session of ``cfg`` in ``role`` (see the module docstring).

    ``output`` overrides ``cfg.storage.output`` (default: the current folder).
    ``estimator`` overrides the one ``cfg`` names (tests pass a cheap fake; a
    worker wraps its own); ``dataset``: already loaded data for it.  ``worker``:
    the worker's index (its sampler seed is ``cfg.seed + worker``).  ``setup``:
    the owner's stored scores (``session.setup``), for the ``trial`` role.
    ``latency_table``: ``cfg.latency.table`` already loaded (the command checks it first; a search loads
    its table once).
    """
    import optuna

    from search_spaces import get_space

    from ..latency import LatencyMeter, LatencyTable, TablePredictor
    from ..samplers import make_sampler

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    if (role == "trial") != (setup is not None):
        raise ValueError("the trial role, and only it, takes the owner's setup")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(output or cfg.storage.output or ".")
    cfg = replace(cfg, storage=replace(cfg.storage, output=str(out)))
    space = get_space(cfg.space)
    reward = cfg.reward()
    directions = directions_for(cfg.strategy)
    if estimator is None:
        estimator = estimator_for(cfg, dataset)
    # a trial process may run on another machine, without the output folder: its cache stays in memory
    cache = out / LATENCY_CACHE if cfg.metric == "latency" and role != "trial" else None
    if cfg.latency.table:  # predicted from a per-layer table: ~0.2 ms instead of ~1 s measured
        meter = TablePredictor(latency_table if latency_table is not None else LatencyTable.load(cfg.latency.table))
    else:
        meter = LatencyMeter(threads=cfg.latency.threads, runs=cfg.latency.runs, warmup=cfg.latency.warmup,
                             cache_path=cache)
    cost_fn = make_cost_fn(cfg.metric, meter, cfg.flops_convention)
    storage = cfg.storage.url or str(out / JOURNAL_NAME)
    study_name = cfg.storage.study_name or cfg.default_study_name()
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3) if early_stopping(estimator, len(directions) > 1)
              else optuna.pruners.NopPruner())

    study = None
    if role == "owner":
        if is_journal_path(storage):  # a kill -9 during an append can leave a torn last line and a lock
            repair_journal(storage)
        study = open_study(storage, study_name, make_sampler(cfg.strategy, seed=cfg.seed), directions, pruner)
        study.set_user_attr("config", _recorded(cfg))
        recovered = recover_stale_trials(study)
        if log and recovered:
            log(f"resume: {recovered} interrupted trial(s) marked FAIL and re-queued")
        setup = _score_references(study, space, estimator, cost_fn, cfg.calibration_samples)
    elif role == "worker":
        study = open_study(storage, study_name, make_sampler(cfg.strategy, seed=cfg.seed + worker), directions,
                           pruner)
        setup = _stored_setup(study)
    acc_map = _accuracy_map(estimator.kind, setup)
    reference = {}
    for name, r in setup["references"].items():
        acc = None if r["failed"] else acc_map(r["score"])
        reference[name] = {**r, "accuracy": acc, "reward": None if acc is None else reward(acc, r["cost"])}
    if role == "owner" and not study.trials:
        # B0 is in the space: start from it, so the search can never end below it
        try:
            study.enqueue_trial(space.encode(reference_specs()["efficientnet-b0"]),
                                user_attrs={"enqueued": "efficientnet-b0"})
        except ValueError:
            pass  # another skeleton: B0 is not a member
    memo = memo_from_study(study) if study is not None else {}
    return SearchSession(config=cfg, role=role, space=space, reward=reward, directions=directions,
                         estimator=estimator, cost_fn=cost_fn, latency_meter=meter, storage=storage,
                         study_name=study_name, study=study,
                         setup=setup, accuracy_map=acc_map, reference=reference, memo=memo)


def _recorded(cfg: SearchConfig) -> dict:
    """The configuration as recorded in the study (without the output folder: a study may move)."""
    d = cfg.to_dict()
    d["storage"] = {k: v for k, v in d["storage"].items() if k != "output"}
    return d
