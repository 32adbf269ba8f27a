"""One trial: choices -> spec -> cost -> estimate -> reward, recorded on the Optuna trial.

* :func:`make_cost_fn` (metric, latency meter) -> ``cost_fn(spec)``;
* :func:`make_objective` (space, estimator, reward, accuracy map, cost function)
  -> ``objective(trial)``: suggests the space's categorical choices, decodes a
  spec, measures its cost, estimates it, and returns the reward (or, for a
  multi-objective strategy, ``(accuracy, cost)``).  Everything else goes into the
  trial's user attrs: ``fingerprint``, ``flops``, ``latency``, ``score`` (raw
  estimator output), ``accuracy`` (accuracy-like), ``reward``, and ``reason`` (one
  line) for a failed trial.  It works with any Optuna trial, including ``FixedTrial``;
* :func:`run_trial`: one asked trial through the objective, told to the study;
* :func:`remember`: what finished trials teach the failure/score memo.
"""
from __future__ import annotations

from typing import Callable, Iterable

from ..reward import Reward
from ..spec import Spec

__all__ = ["TrialFailed", "COST_METRICS", "make_cost_fn", "make_objective", "run_trial", "remember",
           "memo_from_study", "TRANSIENT_FAILURES"]


class TrialFailed(Exception):
    """The estimator could not score the architecture (recorded as a FAIL trial with its reason)."""


#: metric -> the reward's C for a spec, given its FLOPs and the session's latency meter.  A new
#: cost (say, latency predicted from a table) is one entry here plus its name in nas.reward.METRICS;
#: every metric other than "flops" is recorded in the trials' ``latency`` column.
COST_METRICS: dict[str, Callable[[Spec, float, Callable[[Spec], float]], float]] = {
    "flops": lambda spec, flops, latency_meter: flops,
    "latency": lambda spec, flops, latency_meter: float(latency_meter(spec)),
}

#: Failure reasons that say nothing about the architecture (the process or the cluster stopped).
TRANSIENT_FAILURES = ("stale", "interrupted", "ray:")


def make_cost_fn(metric: str, latency_meter: Callable[[Spec], float] | None = None,
                 flops_convention: str = "fvcore") -> Callable[[Spec], dict]:
    """spec -> {"flops": ..., "latency": ... or None, "cost": the reward's C}; "flops" counted in
    ``flops_convention`` (one of :data:`nas.cost.FLOP_CONVENTIONS`)."""
    from ..cost import FLOP_CONVENTIONS, cost

    if flops_convention not in FLOP_CONVENTIONS:
        raise ValueError(f"unknown FLOP convention {flops_convention!r}; conventions: {', '.join(FLOP_CONVENTIONS)}")

    try:
        measure = COST_METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; metrics: {', '.join(COST_METRICS)}") from None

    def fn(spec: Spec) -> dict:
        flops = float(cost(spec).flops_in(flops_convention))
        c = measure(spec, flops, latency_meter)
        return {"flops": flops, "latency": None if metric == "flops" else c, "cost": c}

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


def remember(memo: dict, trials: Iterable) -> dict:
    """Add what finished ``trials`` learned to ``memo`` (fingerprint -> {"score"} or {"reason"}), so a
    known architecture is not estimated again and a known failure fails at once; returns ``memo``."""
    from optuna.trial import TrialState

    for t in trials:
        fp = t.user_attrs.get("fingerprint")
        if not fp:
            continue
        if t.state == TrialState.COMPLETE and "score" in t.user_attrs:
            memo[fp] = {"score": t.user_attrs["score"]}
        elif (t.state == TrialState.FAIL and t.user_attrs.get("reason")
              and not str(t.user_attrs["reason"]).startswith(TRANSIENT_FAILURES)):
            memo.setdefault(fp, {"reason": t.user_attrs["reason"]})
    return memo


def memo_from_study(study) -> dict:
    """The memo of everything ``study`` has finished (see :func:`remember`)."""
    return remember({}, study.get_trials(deepcopy=False))
