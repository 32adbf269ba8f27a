"""Step one of compound scaling: the small grid search for (alpha, beta, gamma) at phi = 1.

EfficientNet fixes phi = 1, enumerates alpha, beta, gamma >= 1 with
alpha * beta^2 * gamma^2 ~= 2 (so every candidate about doubles the FLOPs),
trains each scaled base on the same budget and keeps the most accurate.

* :func:`grid_points` enumerates the coefficient grid (pure arithmetic);
* :func:`make_candidates` scales the base with each point, merges points that
  give the *same* architecture (at 16 px, gamma = 1.05 and 1.1 may both round to
  17 px), and subsamples deterministically when there are more than the budget
  allows (evenly spaced in (alpha, beta, gamma) order; the JSON says so);
* :func:`run_grid_search` trains the candidates through an ``evaluate(spec)``
  callable (tests inject a fake; the CLI passes :func:`nas.train.train_and_evaluate`)
  inside one persistent Optuna study, so an interrupted search resumes without
  repeating finished candidates;
* :func:`write_results` writes ``grid.json`` and ``grid.png``.

Resuming, precisely: each candidate is an enqueued trial with the fixed
parameter ``candidate`` (its index).  On start, COMPLETE trials and FAIL trials
that carry a ``reason`` (the evaluator reported a failure: NaN loss, out of
memory, an exception; journals written before the search and the grid agreed on
that name call it ``failure``) count as done and are never rerun.  A trial left
RUNNING by a killed process, or FAIL without a reason (interrupted), is marked
``interrupted`` and its candidate runs again.  Queued (WAITING) trials of
candidates that this run does not select (an earlier run with another
``max_candidates``) are closed as ``superseded`` so they do not jump the queue.  One process per study: a second
process on the same storage would take the first one's RUNNING trial for stale.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from nas.atomic import atomic_write_bytes, atomic_write_text
from nas.spec import Spec
from nas.storage import optuna_storage

from .compound import ScalingError, compound_scale, constraint_value

__all__ = ["Candidate", "GridError", "grid_points", "make_candidates", "run_grid_search", "GridResult",
           "write_results", "plot_results", "default_storage", "STUDY_NAME", "TARGET"]

#: alpha * beta^2 * gamma^2 must be near this (FLOPs double per unit of phi).
TARGET = 2.0
STUDY_NAME = "nas-scale-grid"


class GridError(ValueError):
    """A user error in grid mode (bad grid bounds, an existing study made with another grid)."""


@dataclass(frozen=True)
class Candidate:
    index: int
    alpha: float
    beta: float
    gamma: float
    spec: Spec
    flops: int
    params: int
    duplicate_of: int | None = None  # index of the candidate with the identical architecture

    @property
    def constraint(self) -> float:
        return constraint_value(self.alpha, self.beta, self.gamma)


def grid_points(*, step: float = 0.05, max_coef: float = 1.4, tolerance: float = 0.1,
                target: float = TARGET) -> list[tuple[float, float, float]]:
    """All (alpha, beta, gamma) on ``1, 1+step, ... <= max_coef`` with |a*b^2*g^2 - target| <= tolerance*target."""
    for label, v in (("step", step), ("max_coef", max_coef), ("tolerance", tolerance)):
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise GridError(f"{label} must be a finite number, got {v!r}")
    if not 0 < step <= 1:
        raise GridError(f"step must be in (0, 1], got {step:g}")
    if not 1 <= max_coef <= 3:
        raise GridError(f"max_coef must be in [1, 3], got {max_coef:g}")
    if not 0 <= tolerance < 1:
        raise GridError(f"tolerance must be in [0, 1), got {tolerance:g}")
    n = int(math.floor((max_coef - 1) / step + 1e-9))
    if n > 200:
        raise GridError(f"step {step:g} up to {max_coef:g} gives {n + 1} values per coefficient; use a coarser step")
    values = [round(1 + i * step, 6) for i in range(n + 1)]
    points = [(a, b, g) for a in values for b in values for g in values
              if abs(constraint_value(a, b, g) - target) <= tolerance * target + 1e-12]
    if not points:
        raise GridError(f"no (alpha, beta, gamma) on the grid (step {step:g}, up to {max_coef:g}) has "
                        f"alpha*beta^2*gamma^2 within {tolerance:g} x {target:g}; widen --tolerance or --max-coef")
    return points


def make_candidates(base: Spec, points: Sequence[tuple[float, float, float]], *,
                    max_candidates: int | None = None) -> tuple[list[Candidate], dict]:
    """Scale ``base`` by phi = 1 with every point; merge identical architectures; subsample to ``max_candidates``.

    Returns the candidates (all points, in order) and ``info`` with ``grid_size``,
    ``unique`` (distinct architectures), ``run`` (indices to train) and ``subsampled``.
    """
    from nas.cost import cost

    cands: list[Candidate] = []
    first_of: dict[str, int] = {}
    for i, (a, b, g) in enumerate(points):
        spec = compound_scale(base, 1, a, b, g, name=f"{base.name or 'base'}-a{a:g}-b{b:g}-g{g:g}")
        c = cost(spec)
        key = spec.fingerprint()
        dup = first_of.setdefault(key, i)
        cands.append(Candidate(i, a, b, g, spec, c.flops, c.params, None if dup == i else dup))
    unique = [c.index for c in cands if c.duplicate_of is None]
    run = unique
    if max_candidates is not None and len(unique) > max_candidates:
        if max_candidates < 1:
            raise GridError(f"max_candidates must be >= 1, got {max_candidates}")
        if max_candidates == 1:
            picks = [len(unique) // 2]
        else:  # evenly spaced over the (alpha, beta, gamma)-ordered list, both ends included
            picks = sorted({round(k * (len(unique) - 1) / (max_candidates - 1)) for k in range(max_candidates)})
        run = [unique[p] for p in picks]
    info = {"grid_size": len(points), "unique": len(unique), "run": run, "subsampled": len(run) < len(unique)}
    return cands, info


@dataclass
class GridResult:
    candidates: list[dict]
    best: dict | None
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**self.info, "candidates": self.candidates, "best": self.best}


def default_storage(output_dir: str | Path):
    """A journal file in the output folder (Optuna's advice for one machine)."""
    return optuna_storage(Path(output_dir) / "grid.journal")


def _failure(t) -> str | None:
    """A failed candidate's one-line reason (``failure`` in journals written before it was called ``reason``)."""
    return t.user_attrs.get("reason", t.user_attrs.get("failure"))


def _grid_key(cands: Sequence[Candidate], budget: dict) -> str:
    # not the subsample: a later run with a larger --max-candidates reuses what is finished
    blob = json.dumps({"points": [(c.alpha, c.beta, c.gamma, c.spec.fingerprint()) for c in cands],
                       "budget": budget}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _outcome(r: Any) -> tuple[float | None, str | None, dict]:
    """(accuracy, failure reason, extra) from a TrainResult-like object or a dict."""
    get = (lambda k, d=None: r.get(k, d)) if isinstance(r, dict) else (lambda k, d=None: getattr(r, k, d))
    acc = get("accuracy")
    failed = bool(get("failed", False)) or acc is None or not math.isfinite(float(acc))
    reason = (get("reason") or "evaluator returned no accuracy") if failed else None
    extra = {k: get(k) for k in ("loss", "seconds", "steps", "epochs", "images_per_second") if get(k) is not None}
    return (None if failed else float(acc)), reason, extra


def run_grid_search(base: Spec, evaluate: Callable[[Spec], Any], *, storage=None, output_dir: str | Path | None = None,
                    step: float = 0.05, max_coef: float = 1.4, tolerance: float = 0.1,
                    max_candidates: int | None = None, budget: dict | None = None, progress: bool = True,
                    log: Callable[[str], None] | None = None) -> GridResult:
    """Train every (subsampled) candidate once, inside one persistent Optuna study, and pick the best.

    ``evaluate(spec)`` returns an object (or dict) with ``accuracy``, ``failed``
    and ``reason`` — :class:`nas.train.TrainResult` fits.  ``storage``: what
    :func:`nas.storage.optuna_storage` takes (a URL, a journal path, a storage
    object); default a journal file ``grid.journal`` in ``output_dir``.
    ``budget`` describes the training budget; it is part of the study's identity
    (resuming with another budget or grid is refused).
    """
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    log = log or (lambda s: None)
    points = grid_points(step=step, max_coef=max_coef, tolerance=tolerance)
    cands, info = make_candidates(base, points, max_candidates=max_candidates)
    run = info["run"]
    budget = dict(budget or {})
    key = _grid_key(cands, budget)
    if storage is None:
        if output_dir is None:
            raise GridError("give a storage or an output folder")
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        storage = default_storage(output_dir)

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=STUDY_NAME, storage=optuna_storage(storage), direction="maximize",
                                load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=0))
    old_key = study.user_attrs.get("grid_key")
    if old_key is None:
        study.set_user_attr("grid_key", key)
        study.set_user_attr("base", base.name)
        study.set_user_attr("base_fingerprint", base.fingerprint())
        study.set_user_attr("budget", budget)
    elif old_key != key:
        raise GridError("the study in this storage was made with another base, grid or budget; "
                        "use another --output folder (or --storage) to start a new search")

    dist = CategoricalDistribution(list(range(len(cands))))
    done: dict[int, Any] = {}
    waiting: dict[int, Any] = {}
    for t in study.get_trials(deepcopy=False):
        idx = t.params.get("candidate", t.system_attrs.get("fixed_params", {}).get("candidate"))
        if idx is None or "superseded" in t.user_attrs:
            continue
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and _failure(t) is not None):
            done[idx] = t
        elif t.state == TrialState.WAITING:
            if idx in waiting:
                _supersede(study, t)
            else:
                waiting[idx] = t
        elif t.state == TrialState.RUNNING or t.state == TrialState.FAIL and "interrupted" not in t.user_attrs:
            # left behind by a killed or interrupted process: record that, run the candidate again
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            if t.state == TrialState.RUNNING:
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    pending = [i for i in run if i not in done]
    # queued by an earlier run with another subsample (or already finished): take them out of the queue,
    # or study.ask() would hand them out before this run's candidates
    for idx, t in list(waiting.items()):
        if idx not in pending:
            _supersede(study, t)
            del waiting[idx]
    if done:
        log(f"resuming: {len(done)} candidate(s) already finished, {len(pending)} to go")
    for i in pending:
        if i not in waiting:
            study.enqueue_trial({"candidate": i})

    bar = None
    if progress and pending:
        from nas.progress import progress_bar

        bar = progress_bar(total=len(run), initial=len(run) - len(pending), desc="grid search", unit="cand",
                           dynamic_ncols=True)
    try:
        for _ in range(len(pending)):
            trial = study.ask({"candidate": dist})
            idx = int(trial.params["candidate"])
            c = cands[idx]
            for k, v in (("alpha", c.alpha), ("beta", c.beta), ("gamma", c.gamma), ("flops", c.flops),
                         ("params", c.params), ("resolution", c.spec.resolution)):
                trial.set_user_attr(k, v)
            if bar is not None:
                bar.set_postfix_str(f"a={c.alpha:g} b={c.beta:g} g={c.gamma:g} {c.spec.resolution}px")
            t0 = time.perf_counter()
            try:
                acc, reason, extra = _outcome(evaluate(c.spec))
            except Exception as e:  # a failed candidate is a result, not the end of the search
                acc, reason, extra = None, f"{type(e).__name__}: {e}", {}
            extra.setdefault("seconds", time.perf_counter() - t0)
            for k, v in extra.items():
                trial.set_user_attr(k, v)
            if acc is None:
                trial.set_user_attr("reason", " ".join(str(reason).split())[:500])
                study.tell(trial, state=TrialState.FAIL)
                log(f"candidate {idx} (a={c.alpha:g} b={c.beta:g} g={c.gamma:g}) failed: {reason}")
            else:
                study.tell(trial, acc)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return collect(study, cands, info, base=base, budget=budget, tolerance=tolerance, step=step, max_coef=max_coef)


def _supersede(study, t) -> None:
    """Take a WAITING trial out of the queue: claim it (WAITING -> RUNNING), label it, close it as FAIL."""
    from optuna.trial import TrialState

    if study._storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
        study._storage.set_trial_user_attr(t._trial_id, "superseded", True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def collect(study, cands: Sequence[Candidate], info: dict, *, base: Spec, budget: dict, tolerance: float,
            step: float, max_coef: float) -> GridResult:
    """The study's trials as grid.json rows (duplicates share their twin's result)."""
    from optuna.trial import TrialState

    by_idx: dict[int, Any] = {}
    for t in study.get_trials(deepcopy=False):
        idx = t.params.get("candidate")
        if (idx is None or t.state not in (TrialState.COMPLETE, TrialState.FAIL) or "interrupted" in t.user_attrs
                or "superseded" in t.user_attrs):
            continue
        by_idx[idx] = t  # the latest wins
    run = set(info["run"])
    rows = []
    for c in cands:
        src = c.index if c.duplicate_of is None else c.duplicate_of
        t = by_idx.get(src)
        row = {"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "constraint": round(c.constraint, 6),
               "flops": c.flops, "params": c.params, "resolution": c.spec.resolution,
               "depth": c.spec.n_layers, "stem_width": c.spec.stem.out_channels,
               "head_width": c.spec.head.out_channels, "fingerprint": c.spec.fingerprint(),
               "accuracy": None, "state": "SKIPPED" if src not in run else "PENDING"}
        if c.duplicate_of is not None:
            row["duplicate_of"] = c.duplicate_of
        if t is not None:
            row["state"] = t.state.name
            row["trial"] = t.number
            if t.state == TrialState.COMPLETE:
                row["accuracy"] = t.value
            else:
                row["reason"] = _failure(t)
            if "seconds" in t.user_attrs:
                row["seconds"] = round(t.user_attrs["seconds"], 2)
        rows.append(row)
    ok = [r for r in rows if r["accuracy"] is not None and "duplicate_of" not in r]
    best = None
    if ok:
        b = max(ok, key=lambda r: (r["accuracy"], -r["flops"]))
        best = {"alpha": b["alpha"], "beta": b["beta"], "gamma": b["gamma"], "accuracy": b["accuracy"],
                "flops": b["flops"]}
    meta = {"base": base.name, "base_fingerprint": base.fingerprint(), "base_resolution": base.resolution,
            "phi": 1, "target": TARGET, "tolerance": tolerance, "step": step, "max_coef": max_coef,
            "grid_size": info["grid_size"], "unique_architectures": info["unique"],
            "trained": sum(r["state"] in ("COMPLETE", "FAIL") and "duplicate_of" not in r for r in rows),
            "subsampled": info["subsampled"], "budget": budget}
    if info["subsampled"]:
        meta["note"] = (f"{info['unique']} distinct architectures on the grid, {len(info['run'])} selected for "
                        "training: evenly spaced in (alpha, beta, gamma) order (deterministic); the rest are SKIPPED "
                        "(candidates finished by an earlier run with another --max-candidates are kept)")
    return GridResult(rows, best, meta)


def write_results(result: GridResult, output_dir: str | Path, *, command: str | None = None) -> list[Path]:
    """``grid.json`` (and ``grid.png`` when matplotlib is there), written atomically."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = result.to_dict()
    if command:
        d = {"command": command, **d}
    paths = [out / "grid.json"]
    atomic_write_text(paths[0], json.dumps(d, indent=2) + "\n")
    png = plot_results(result)
    if png is not None:
        paths.append(out / "grid.png")
        atomic_write_bytes(paths[1], png)
    return paths


def plot_results(result: GridResult) -> bytes | None:
    """Accuracy vs FLOPs of the trained candidates (colour: gamma), best circled; PNG bytes."""
    try:
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is a convenience; grid.json is the result
        return None
    rows = [r for r in result.candidates if r["accuracy"] is not None and "duplicate_of" not in r]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    if rows:
        sc = ax.scatter([r["flops"] / 1e6 for r in rows], [r["accuracy"] for r in rows],
                        c=[r["gamma"] for r in rows], cmap="viridis", s=[20 + 40 * (r["alpha"] - 1) * 5 for r in rows])
        fig.colorbar(sc, ax=ax, label="gamma (resolution)")
        for r in rows:
            ax.annotate(f"{r['alpha']:g}/{r['beta']:g}/{r['gamma']:g}", (r["flops"] / 1e6, r["accuracy"]),
                        fontsize=6, xytext=(3, 2), textcoords="offset points")
        if result.best:
            ax.scatter([result.best["flops"] / 1e6], [result.best["accuracy"]], s=160, facecolors="none",
                       edgecolors="red", label="best")
            ax.legend(loc="lower right")
    info = result.info
    ax.set_xlabel("MFLOPs at the candidate's resolution")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"grid search at phi=1 from {info.get('base')} @ {info.get('base_resolution')} px\n"
                 f"label alpha/beta/gamma, marker size ~ alpha", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
