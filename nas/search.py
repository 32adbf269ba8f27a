"""The search engine behind ``nas-search``: space x estimator x reward, driven by an Optuna study.

Seams (each usable alone; the Ray/worker backends reuse them):

* :func:`make_objective` (space, estimator, reward, accuracy map, cost function)
  -> ``objective(trial)``: suggests the space's categorical choices, decodes a
  spec, measures its cost, estimates it, and returns the reward (or, for a
  multi-objective strategy, ``(accuracy, cost)``).  Everything else goes into the
  trial's user attrs: ``fingerprint``, ``flops``, ``latency``, ``score`` (raw
  estimator output), ``accuracy`` (accuracy-like), ``reward``, ``reason`` on
  failure.  It works with any Optuna trial, including ``FixedTrial``.
* :func:`open_study` (storage, study name, sampler, directions) -> study.
* :func:`recover_stale_trials`: a single-process resume step (RUNNING -> FAIL, re-queued).
* :func:`run_search` (a :class:`SearchConfig`) -> :class:`SearchResult`; it
  runs the ask/tell loop and never writes outputs.
* :func:`write_outputs` (result, folder): best.json, trials.csv, summary.json,
  pareto.png, each atomically.

The budget counts COMPLETE trials: rerunning the same configuration on the same
storage runs only the remainder.  EfficientNet-B0's choices are enqueued as the
first trial of a fresh study (B0 is a member of ``mnasnet-b0``), so the best
found is never worse than B0 under the same estimator and reward.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .reward import IdentityMap, ProxyMap, Reward
from .spec import Spec, atomic_write_bytes, atomic_write_text

__all__ = ["SearchConfig", "SearchResult", "TrialFailed", "make_objective", "open_study", "recover_stale_trials",
           "run_search", "run_trial", "write_outputs", "reference_specs", "DEFAULT_BUDGET", "TRAIN_BUDGET", "JOURNAL_NAME"]

DEFAULT_BUDGET = 200  # trials; with proxy:synflow at 1 thread about 2-3 minutes on 2 cores (results/search/README.md)
TRAIN_BUDGET = 30  # the CLI default with the training estimator: ~6.5 minutes on 2 cores (results/search/default)
JOURNAL_NAME = "study.journal"
REFERENCES = ("efficientnet-b0", "mobilenet-v2")
CALIBRATION_SAMPLES = 24  # seeded space members measured to set the proxy map's scale
MAX_FAILURE_FACTOR = 1.0  # stop after budget * factor + 20 failed/pruned attempts (a sampler stuck on failures)


class TrialFailed(Exception):
    """The estimator could not score the architecture (recorded as a FAIL trial with its reason)."""


@dataclass(frozen=True)
class SearchConfig:
    target: float
    metric: str = "flops"  # flops | latency
    constraint: str = "soft"
    w: float | None = None
    strategy: str = "tpe"
    budget: int = DEFAULT_BUDGET
    seed: int = 0
    estimator: str = "proxy:synflow"
    data: str = "sample"
    epochs: float = 1
    recipe: str | None = None  # training estimator: None = nas.estimators.TRAIN_RECIPE
    resolution: int | None = None
    space: str = "mnasnet-b0"
    storage: str | None = None  # None: a journal file in the output folder
    study_name: str | None = None
    output: str | None = None
    latency_threads: int = 1
    latency_runs: int = 10
    latency_warmup: int = 3
    calibration_samples: int = CALIBRATION_SAMPLES
    limit_train: int | None = None
    limit_val: int | None = None

    def reward(self) -> Reward:
        return Reward.make(self.target, self.metric, self.constraint, self.w)

    def default_study_name(self) -> str:
        t = f"{self.metric}{self.target:g}"
        return f"{self.space}-{self.strategy}-s{self.seed}-{self.estimator}-{t}-{self.constraint}"


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


# ---------------------------------------------------------------- building blocks


def reference_specs() -> dict[str, Spec]:
    from .presets import load_preset

    return {n: load_preset(n) for n in REFERENCES}


def make_cost_fn(metric: str, latency_meter=None) -> Callable[[Spec], dict]:
    """spec -> {"flops": ..., "latency": ... or None, "cost": the reward's C}."""
    from .cost import cost

    def fn(spec: Spec) -> dict:
        flops = float(cost(spec).flops)
        lat = float(latency_meter(spec)) if metric == "latency" else None
        return {"flops": flops, "latency": lat, "cost": lat if metric == "latency" else flops}

    return fn


def make_objective(space, estimator, reward: Reward, accuracy_map, cost_fn: Callable[[Spec], dict], *,
                   multi_objective: bool = False, memo: dict | None = None) -> Callable:
    """``objective(trial)`` for Optuna; see the module docstring.

    ``memo`` (fingerprint -> {"score"} or {"reason"}) avoids re-estimating a
    configuration seen before (two choice vectors can decode to one spec, and
    samplers re-propose); a configuration that failed fails again at once.
    """
    dists = space.distributions()
    memo = {} if memo is None else memo

    def objective(trial) -> float | tuple[float, float]:
        choices = {n: trial.suggest_categorical(n, d.choices) for n, d in dists.items()}
        spec = space.decode(choices)
        fp = spec.fingerprint()
        trial.set_user_attr("fingerprint", fp)
        c = cost_fn(spec)
        trial.set_user_attr("flops", c["flops"])
        if c["latency"] is not None:
            trial.set_user_attr("latency", c["latency"])
        known = memo.get(fp)
        if known is not None and "reason" in known:
            trial.set_user_attr("reason", known["reason"])
            raise TrialFailed(known["reason"])
        if known is not None:
            score = known["score"]
        else:
            report = None
            if not multi_objective and hasattr(trial, "report") and hasattr(trial, "should_prune"):
                def report(epoch, value):
                    trial.report(value, epoch)
                    return trial.should_prune()
            est = estimator(spec, report=report)
            trial.set_user_attr("estimate_seconds", round(est.seconds, 4))
            if est.failed:
                memo[fp] = {"reason": est.reason}
                trial.set_user_attr("reason", est.reason)
                raise TrialFailed(est.reason)
            if est.pruned:
                import optuna

                trial.set_user_attr("score", est.score)
                raise optuna.TrialPruned(f"pruned at accuracy {est.score}")
            score = est.score
            memo[fp] = {"score": score}
        acc = accuracy_map(score)
        r = reward(acc, c["cost"])
        trial.set_user_attr("score", score)
        trial.set_user_attr("accuracy", acc)
        trial.set_user_attr("reward", r)
        return (acc, c["cost"]) if multi_objective else r

    return objective


def open_study(storage, study_name: str, sampler, directions: list[str], pruner=None):
    """Create or load (``load_if_exists``) the study; ``storage`` is a URL, a storage object, or a journal path."""
    import optuna

    if storage == ":memory:":  # scripts and benchmarks: nothing on disk, no resume
        storage = None
    elif isinstance(storage, (str, Path)) and "://" not in str(storage):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(storage)))
    study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    if [d.name.lower() for d in study.directions] != list(directions):
        raise ValueError(f"study {study_name!r} exists with directions "
                         f"{[d.name.lower() for d in study.directions]}, not {directions}")
    return study


def recover_stale_trials(study) -> int:
    """Mark RUNNING trials FAIL (reason ``stale``) and re-queue their parameters.

    Only for a single process owning the study: with several live workers a
    RUNNING trial may be someone else's (a multi-worker backend needs heartbeats).
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


#: Failure reasons that say nothing about the architecture (the process or the cluster stopped).
TRANSIENT_FAILURES = ("stale", "interrupted", "ray:")


def memo_from_study(study) -> dict:
    """fingerprint -> {"score"} or {"reason"}: what earlier trials learned, so a known
    architecture is not estimated again and a known failure fails at once."""
    from optuna.trial import TrialState

    memo: dict = {}
    for t in study.get_trials(deepcopy=False):
        fp = t.user_attrs.get("fingerprint")
        if not fp:
            continue
        if t.state == TrialState.COMPLETE and "score" in t.user_attrs:
            memo[fp] = {"score": t.user_attrs["score"]}
        elif (t.state == TrialState.FAIL and t.user_attrs.get("reason")
              and not str(t.user_attrs["reason"]).startswith(TRANSIENT_FAILURES)):
            memo.setdefault(fp, {"reason": t.user_attrs["reason"]})
    return memo


def _estimator_options(cfg: SearchConfig) -> dict:
    options = {"resolution": cfg.resolution, "epochs": cfg.epochs, "seed": cfg.seed, "limit_train": cfg.limit_train,
               "limit_val": cfg.limit_val}
    if cfg.recipe is not None:
        options["recipe"] = cfg.recipe
    return options


def estimator_for(cfg: SearchConfig, dataset=None):
    """The estimator ``cfg`` names, with its options; the data is loaded from ``cfg.data`` unless given.

    One construction for the single-process engine, the local workers and the Ray trainables.
    """
    from .data import load_dataset
    from .estimators import make_estimator

    if dataset is None:
        dataset = load_dataset(cfg.data, seed=cfg.seed)
    return make_estimator(cfg.estimator, dataset, **_estimator_options(cfg))


def _evaluate_references(study, space, estimator, cost_fn, n_calibration: int) -> tuple[dict, list]:
    """Raw scores of the references and of the calibration sample, stored in the study (resume reuses them)."""
    import random

    stored = study.user_attrs.get("references")
    if isinstance(stored, dict) and all(n in stored for n in REFERENCES):
        refs = stored
    else:
        refs = {}
        for name, spec in reference_specs().items():
            c = cost_fn(spec)
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
    return refs, calib


def _rows(study, reward: Reward, multi: bool) -> list[dict]:
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


# ---------------------------------------------------------------- the run


class _GracefulStop:
    """First Ctrl-C: finish the trial in flight, then stop; a second one interrupts it.

    An exception raised at an arbitrary point could leave the journal's file lock
    behind (the next write would wait on it forever), so the first signal only
    sets a flag.  The second raises KeyboardInterrupt: that trial is failed and
    re-queued.  Only installed in the main thread.
    """

    def __init__(self):
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        import sys

        print("\nnas-search: stopping after the current trial (Ctrl-C again to abort it)", file=sys.stderr)

    def install(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)

    def uninstall(self):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def run_trial(study, trial, objective, n_params: int) -> str:
    """Estimate one asked trial and tell the study: ``"complete"``, ``"pruned"`` or ``"failed"``.

    A failing trial is recorded with a one-line ``reason`` and the caller goes on.
    A KeyboardInterrupt fails the trial, queues its parameters again (when it got
    all ``n_params`` of them) and propagates, so an interrupted trial is never lost.
    """
    import optuna
    from optuna.trial import TrialState

    try:
        values = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
        return "pruned"
    except KeyboardInterrupt:
        trial.set_user_attr("reason", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        if len(trial.params) == n_params:
            study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
        raise
    except Exception as e:  # a failing trial is recorded and the search goes on
        if "reason" not in trial.user_attrs:
            trial.set_user_attr("reason", f"{type(e).__name__}: {e}".splitlines()[0][:500])
        study.tell(trial, state=TrialState.FAIL)
        return "failed"
    study.tell(trial, values)
    return "complete"


def run_search(cfg: SearchConfig, *, output: str | Path | None = None, progress: bool = False, estimator=None,
               dataset=None, log: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or resume) the search described by ``cfg``; returns the result, writes only the study.

    ``estimator`` overrides ``cfg.estimator`` (tests pass a cheap fake).
    KeyboardInterrupt stops the loop cleanly: the trial in flight is failed and
    re-queued, and the result has ``interrupted=True``.
    """
    import optuna
    from optuna.trial import TrialState

    from search_spaces import get_space

    from .latency import LatencyMeter
    from .samplers import MULTI_OBJECTIVE, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t_start = time.perf_counter()
    space = get_space(cfg.space)
    reward = cfg.reward()
    multi = cfg.strategy in MULTI_OBJECTIVE
    out = Path(output or cfg.output or ".")
    storage = cfg.storage or str(out / JOURNAL_NAME)
    study_name = cfg.study_name or cfg.default_study_name()
    if estimator is None:
        estimator = estimator_for(cfg, dataset)
    meter = LatencyMeter(threads=cfg.latency_threads, runs=cfg.latency_runs, warmup=cfg.latency_warmup,
                         cache_path=(out / "latency_cache.json") if cfg.metric == "latency" else None)
    cost_fn = make_cost_fn(cfg.metric, meter)
    sampler = make_sampler(cfg.strategy, seed=cfg.seed)
    # multi-fidelity: with several training epochs, stop a trial whose per-epoch accuracy falls below the
    # median of earlier trials at the same epoch (with one epoch there is nothing left to save)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3) if estimator.kind == "train" and cfg.epochs > 1
              else optuna.pruners.NopPruner())
    study = open_study(storage, study_name, sampler, ["maximize", "minimize"] if multi else ["maximize"], pruner)
    study.set_user_attr("config", {k: v for k, v in asdict(cfg).items() if k != "output"})
    recovered = recover_stale_trials(study)
    if log and recovered:
        log(f"resume: {recovered} interrupted trial(s) marked FAIL and re-queued")

    refs, calib = _evaluate_references(study, space, estimator, cost_fn, cfg.calibration_samples)
    b0 = refs["efficientnet-b0"]
    if estimator.kind == "proxy":
        if b0["failed"]:
            raise RuntimeError(f"the estimator failed on EfficientNet-B0: {b0['reason']}")
        acc_map = ProxyMap.fit(b0["score"], [s for s, _ in calib], [c for _, c in calib])
    else:
        acc_map = IdentityMap()
    reference = {}
    for name, r in refs.items():
        acc = None if r["failed"] else acc_map(r["score"])
        reference[name] = {**r, "accuracy": acc, "reward": None if acc is None else reward(acc, r["cost"])}

    if not study.trials:
        # B0 is in the space: start from it, so the search can never end below it
        try:
            study.enqueue_trial(space.encode(reference_specs()["efficientnet-b0"]), user_attrs={"enqueued": "efficientnet-b0"})
        except ValueError:
            pass  # another skeleton: B0 is not a member

    memo = memo_from_study(study)
    objective = make_objective(space, estimator, reward, acc_map, cost_fn, multi_objective=multi, memo=memo)

    def n_complete() -> int:
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    done = n_complete()
    max_attempts = int(cfg.budget * MAX_FAILURE_FACTOR) + 20
    attempts, interrupted, stopped = 0, False, None
    best_reward = max((t.user_attrs.get("reward", -math.inf) for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE,))), default=None)
    stop = _GracefulStop()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.budget, initial=min(done, cfg.budget), desc="trials", unit="trial", dynamic_ncols=True)
        if best_reward is not None:
            bar.set_postfix(best=f"{best_reward:.4f}")
    try:
        stop.install()
        while done < cfg.budget:
            if stop.requested:
                interrupted = True
                break
            if attempts >= max_attempts:
                stopped = f"stopped after {attempts} failed or pruned attempts"
                break
            trial = study.ask()
            if run_trial(study, trial, objective, len(space.param_names)) != "complete":
                attempts += 1
                continue
            done += 1
            r = trial.user_attrs.get("reward")
            if r is not None and (best_reward is None or r > best_reward):
                best_reward = r
            if bar is not None:
                bar.update(1)
                bar.set_postfix(best=f"{best_reward:.4f}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()

    rows = _rows(study, reward, multi)
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["reward"] is not None]
    best = max(complete, key=lambda r: (r["reward"], -r["number"])) if complete else None
    if best is not None:
        best = dict(best)
        best["spec"] = space.decode({k[6:]: v for k, v in best.items() if k.startswith("param_")})
    return SearchResult(config=cfg, study_name=study_name, storage=storage if isinstance(storage, str) else repr(storage),
                        rows=rows, best=best, reference=reference, pareto=_pareto(rows, cfg.metric),
                        n_complete=len([r for r in rows if r["state"] == "COMPLETE"]),
                        n_failed=len([r for r in rows if r["state"] == "FAIL"]), interrupted=interrupted,
                        seconds=time.perf_counter() - t_start, accuracy_map=acc_map.to_dict(),
                        estimator=estimator.describe() if hasattr(estimator, "describe") else {"name": cfg.estimator},
                        stopped_reason=stopped, extra={"latency_threads": cfg.latency_threads if cfg.metric == "latency" else None})


# ---------------------------------------------------------------- outputs


def _summary_entry(r: dict | None) -> dict | None:
    if r is None:
        return None
    return {k: r.get(k) for k in ("reward", "accuracy", "score", "flops", "latency", "fingerprint", "number")}


def summary_dict(res: SearchResult) -> dict:
    cfg = res.config
    best = _summary_entry(res.best)
    ref = res.reference.get("efficientnet-b0")
    return {
        "best": best,
        "reference": _summary_entry(ref),
        "references": {n: _summary_entry(r) for n, r in res.reference.items()},
        "n_trials_complete": res.n_complete,
        "n_trials_failed": res.n_failed,
        "n_trials": len(res.rows),
        "budget": cfg.budget,
        "interrupted": res.interrupted,
        "stopped_reason": res.stopped_reason,
        "seconds": round(res.seconds, 2),
        "target": {"metric": cfg.metric, "value": cfg.target},
        "reward": cfg.reward().to_dict(),
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "space": cfg.space,
        "estimator": res.estimator,
        "accuracy_map": res.accuracy_map,
        "study_name": res.study_name,
        "storage": res.storage,
        "latency_threads": res.extra.get("latency_threads"),
        "best_beats_reference": (best is not None and ref is not None and ref.get("reward") is not None
                                 and best["reward"] >= ref["reward"]),
        "pareto": [_summary_entry(r) for r in res.pareto],
    }


def best_spec(res: SearchResult) -> Spec | None:
    if res.best is None:
        return None
    cfg = res.config
    b = res.best
    prov = {"tool": "nas-search", "strategy": cfg.strategy, "seed": cfg.seed, "space": cfg.space,
            "target": {"metric": cfg.metric, "value": cfg.target}, "constraint": cfg.constraint,
            "reward_params": cfg.reward().to_dict(), "estimator": res.estimator, "accuracy": b["accuracy"],
            "score": b["score"], "cost": {"flops": b["flops"], "latency": b["latency"]}, "reward": b["reward"],
            "trial": b["number"], "study_name": res.study_name, "storage": res.storage}
    return b["spec"].replace(name=f"{cfg.space}-search-{cfg.strategy}-s{cfg.seed}", provenance=prov)


def trials_csv(res: SearchResult) -> str:
    cols: list[str] = []
    for r in res.rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in res.rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return buf.getvalue()


def pareto_png(res: SearchResult) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = "latency" if res.config.metric == "latency" else "flops"
    scale, unit = (1e3, "ms") if key == "latency" else (1e-6, "MFLOPs")
    pts = [r for r in res.rows if r["state"] == "COMPLETE" and r["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.scatter([r[key] * scale for r in pts], [r["accuracy"] for r in pts], s=10, alpha=0.5, label="trials")
    fr = res.pareto
    ax.plot([r[key] * scale for r in fr], [r["accuracy"] for r in fr], "-o", ms=3, color="C1", label="Pareto front")
    for (name, r), m in zip(res.reference.items(), ("*", "s")):
        if r.get("accuracy") is not None and r.get(key) is not None:
            ax.scatter([r[key] * scale], [r["accuracy"]], marker=m, s=120, color="C3" if m == "*" else "C2",
                       label=name, zorder=5, edgecolor="k")
    if res.best is not None:
        ax.scatter([res.best[key] * scale], [res.best["accuracy"]], marker="D", s=60, color="k", label="best reward",
                   zorder=6)
    ax.axvline(res.config.target * scale, color="grey", ls="--", lw=1, label="target")
    ax.set_xlabel(f"{key} ({unit})")
    ylabel = "accuracy" if res.accuracy_map.get("kind") == "identity" else "accuracy-like (mapped proxy score)"
    ax.set_ylabel(ylabel)
    ax.set_title(f"{res.config.space}: {res.config.strategy}, {res.estimator.get('name')}, seed {res.config.seed}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(res: SearchResult, folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    spec = best_spec(res)
    if spec is not None:
        atomic_write_text(folder / "best.json", spec.to_json() + "\n")
        written.append(folder / "best.json")
    atomic_write_text(folder / "trials.csv", trials_csv(res))
    atomic_write_text(folder / "summary.json", json.dumps(summary_dict(res), indent=2, default=str) + "\n")
    atomic_write_bytes(folder / "pareto.png", pareto_png(res))
    written += [folder / "trials.csv", folder / "summary.json", folder / "pareto.png"]
    return written


def summary_text(res: SearchResult) -> str:
    """The one-screen stdout summary: the best against EfficientNet-B0."""
    s = summary_dict(res)
    cfg = res.config
    key = "latency" if cfg.metric == "latency" else "flops"
    fmt_cost = (lambda v: f"{v * 1e3:.2f} ms") if key == "latency" else (lambda v: f"{v / 1e6:.1f}M")
    lines = [f"nas-search: {cfg.space}, strategy {cfg.strategy}, seed {cfg.seed}, estimator {res.estimator.get('name')}",
             f"target {fmt_cost(cfg.target)} {key}, {cfg.constraint} constraint (alpha {s['reward']['alpha']}, "
             f"beta {s['reward']['beta']}); {s['n_trials_complete']} complete / {s['n_trials_failed']} failed trials "
             f"in {res.seconds:.0f} s" + (" (interrupted)" if res.interrupted else ""),
             "", f"{'':<16} {'reward':>8} {'accuracy':>9} {'FLOPs':>9}" + (f" {'latency':>10}" if key == "latency" else "")]
    for label, r in (("best", s["best"]), ("efficientnet-b0", s["references"].get("efficientnet-b0")),
                     ("mobilenet-v2", s["references"].get("mobilenet-v2"))):
        if r is None or r.get("reward") is None:
            lines.append(f"{label:<16} {'-':>8}")
            continue
        line = f"{label:<16} {r['reward']:>8.4f} {r['accuracy']:>9.4f} {r['flops'] / 1e6:>8.1f}M"
        if key == "latency":
            line += f" {r['latency'] * 1e3:>8.2f}ms"
        lines.append(line)
    if res.best is not None:
        lines += ["", f"best: {res.best['spec'].short()}"]
    if res.accuracy_map.get("kind") != "identity":
        lines.append("accuracy = proxy score mapped by a fixed logistic anchored at B0 (not a measured accuracy)")
    if res.stopped_reason:
        lines.append(res.stopped_reason)
    return "\n".join(lines)
