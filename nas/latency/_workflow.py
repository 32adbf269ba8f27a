"""What ``nas-latency table`` and ``validate`` do between their checks and their output (torch-free to import).

* :func:`open_table`: the table at ``out`` to continue (its set-up must be the wanted one), or a new one;
* :func:`complete_table`: measure what is missing (resumable), then fit the overhead; saved as it goes;
* :func:`correction_members` and :func:`refit_correction`: random whole members measured with the table's
  protocol (resumable: the table is saved after every chunk), then the correction fitted on them;
* :func:`validation_members` and :func:`run_validation`: random members of the table's space, each
  predictable and none of them a member the table was fitted on, then predicted against measured
  (resumable), the report written.
"""
from __future__ import annotations

from pathlib import Path
from ..allocator import tune_allocator
from ..spec import Spec
from ._backends import Backend
from ._build import (NET_CHUNK, build_table, check_same_setup, fit_overhead, measure_networks, reference_spec,
                     space_members)
from ._keys import Entry
from ._protocol import load_record
from ._table import (DEFAULT_FEATURES, DEFAULT_RIDGE, LatencyTable, TableError, fit_correction, predict,
                     predict_breakdown, spec_features)
from ._validate import validate, write_report

__all__ = ["FitError", "open_table", "complete_table", "validation_members", "run_validation",
           "correction_members", "refit_correction", "fitted_fingerprints", "select_correction"]


class FitError(TableError):
    """The overhead fit failed; the measured fit networks are kept (``refit --model constant`` needs no measuring)."""


def open_table(out: Path, wanted: LatencyTable, fit_model: str) -> LatencyTable:
    """The table at ``out`` when it exists (a :class:`TableError` unless it loads and has ``wanted``'s
    set-up; it is then fitted with ``fit_model``), else ``wanted``."""
    if not out.exists():
        return wanted
    table = LatencyTable.load(out)
    check_same_setup(table, wanted, out)
    table.fit["model"] = fit_model
    return table


def complete_table(table: LatencyTable, space, entries: dict[str, Entry], backend: Backend, out: Path, *,
                   resolution: int, fit_networks: int, seed: int, limit: int | None = None,
                   progress: bool = True) -> tuple[int, int]:
    """Measure at most ``limit`` missing entries into ``table`` (saved to ``out``); once none is missing, fit the
    overhead on ``fit_networks`` members (the skeleton first) and save.  Returns (entries before, still missing);
    a failed fit is a :class:`FitError`."""
    tune_allocator()  # the same allocator for entries and whole networks (nas.allocator)
    before = len(table.entries)
    build_table(table, entries, backend, path=out, limit=limit, progress=progress)
    missing = sum(k not in table.entries for k in entries)
    if missing:
        table.save(out)
        return before, missing
    nets = space_members(space, fit_networks, seed, resolution, skeleton_first=True)
    try:
        fit_overhead(table, nets, backend, path=out, progress=progress)
    except TableError as e:
        raise FitError(str(e)) from None
    table.save(out)
    return before, 0


def fitted_fingerprints(table: LatencyTable) -> set[str]:
    """The members the table was fitted on (the overhead's networks, the correction's members)."""
    out = {n["fingerprint"] for n in table.fit["networks"]}
    if table.correction:
        out |= {m["fingerprint"] for m in table.correction["members"]}
    return out


def _draw(space, n: int, seed: int, resolution: int, exclude: set[str]) -> list[Spec]:
    """``n`` seeded random members none of which is in ``exclude`` (drawn on from the same stream)."""
    import random

    rng = random.Random(seed)
    out, seen = [], set(exclude)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 100 * n + 1000:
            raise TableError(f"could not draw {n} members of {space.name} outside the {len(exclude)} excluded")
        spec = space.decode(space.sample(rng)).replace(resolution=resolution, name=f"{space.name}-member-{tries - 1}")
        fp = spec.fingerprint()
        if fp in seen:
            continue
        seen.add(fp)
        out.append(spec)
    return out


def validation_members(table: LatencyTable, space, n: int, seed: int) -> list[Spec]:
    """``n`` random members of ``space`` at the table's resolution, none of them one the table was fitted on
    (held out); a :class:`TableError` before any measuring when one has a piece the table lacks."""
    members = _draw(space, n, seed, table.resolution, fitted_fingerprints(table))
    for spec in members:
        predict(spec, table)
    return members


def correction_members(table: LatencyTable, space, n: int, seed: int) -> list[Spec]:
    """``n`` random members for the correction (seed ``seed``; validation draws with another seed and skips
    them)."""
    members = _draw(space, n, seed, table.resolution, set())
    for spec in members:
        predict_breakdown(spec, table)
    return members


def refit_correction(table: LatencyTable, space, backend: Backend, out: Path, *, n: int, seed: int,
                     features=DEFAULT_FEATURES, ridge: float = DEFAULT_RIDGE, progress: bool = True,
                     chunk: int = NET_CHUNK) -> dict:
    """Measure ``n`` random whole members with the table's protocol (those already in the table's correction
    are kept), then fit the correction; the table is saved to ``out`` after every chunk.  With a duet
    protocol the space's skeleton is the reference and its time is stored as the table's ``reference``."""
    tune_allocator()
    members = correction_members(table, space, n, seed)
    features = list(features)
    c = table.correction
    if c is None or c["features"] != features or c["seed"] != seed:
        c = {"features": features, "coef": None, "members": [], "expected": n, "seed": seed, "ridge": ridge,
             "fit": None}
    wanted = {s.fingerprint() for s in members}
    c["members"] = [m for m in c["members"] if m["fingerprint"] in wanted]
    c["expected"], c["ridge"], c["coef"] = n, ridge, None
    table.correction = c
    have = {m["fingerprint"] for m in c["members"]}
    todo = [s for s in members if s.fingerprint() not in have]
    protocol = table.measure_protocol()
    ref = reference_spec(space, table.resolution) if protocol.duet else None
    ref_seconds = table.reference["seconds"] if (ref is not None and table.reference
                                                 and table.reference["fingerprint"] == ref.fingerprint()) else None
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=len(members), desc="refit", unit="net", dynamic_ncols=True, leave=False)
        bar.update(len(members) - len(todo))
    load_before = load_record()
    try:
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            timings, rt = measure_networks(part, backend, protocol, reference=ref, reference_seconds=ref_seconds)
            if rt is not None and ref_seconds is None:
                ref_seconds = rt.baseline
                table.reference = {"name": ref.name, "fingerprint": ref.fingerprint(), "seconds": ref_seconds}
            for spec, t in zip(part, timings):
                c["members"].append({"name": spec.name, "fingerprint": spec.fingerprint(), "measured": t.seconds,
                                     "spread": t.rel_spread, "features": spec_features(spec, table, names=features)})
            table.save(out)
            if bar is not None:
                bar.update(len(part))
    finally:
        if bar is not None:
            bar.close()
    rows = c["members"]
    X, y = [m["features"] for m in rows], [m["measured"] for m in rows]
    coef, selection = select_correction(X, y, features, ridge)
    pred = [sum(a * f for a, f in zip(coef, m["features"])) for m in rows]
    errs = [p / m["measured"] - 1 for p, m in zip(pred, rows)]
    c["coef"] = coef
    c["fit"] = {"n": len(rows), "within_10pct": sum(abs(e) <= 0.1 for e in errs) / len(errs),
                "rmspe": (sum(e * e for e in errs) / len(errs)) ** 0.5, "selection": selection,
                "protocol": protocol.to_dict(), "load": {"before": load_before, "after": load_record()}}
    table.save(out)
    return c


def select_correction(X: list[list[float]], y: list[float], features: list[str], ridge: float = DEFAULT_RIDGE):
    """The correction on the nested feature sets ``features[:2]``, ``features[:3]``, ... (the first two being
    ``one`` and ``sum`` by default), each scored by leave-one-out RMSPE on the measured members; the best
    set's coefficients (0 for the features left out) and every set's score.  With 30 noisy members the five
    correlated features can fit noise: the held-out score decides, not the fit's own."""
    import numpy as np

    n, k = len(y), len(features)
    first = 2 if k >= 2 else 1
    sizes = [s for s in range(first, k + 1) if n >= s + 2] or [k]
    scores: dict[str, float] = {}
    best = None
    for size in sizes:
        cols = list(range(size))
        sub = [[row[j] for j in cols] for row in X]
        errs = []
        for i in range(n):
            rest = [r for j, r in enumerate(sub) if j != i]
            try:
                cf = fit_correction(rest, [v for j, v in enumerate(y) if j != i], features[:size], ridge)
            except TableError:
                errs = None
                break
            errs.append(float(np.dot(cf, sub[i])) / y[i] - 1)
        name = ",".join(features[:size])
        if errs is None:
            continue
        scores[name] = float(np.sqrt(np.mean(np.square(errs))))
        if best is None or scores[name] < scores[best[0]] - 1e-12:
            best = (name, size)
    size = best[1] if best else k
    cf = fit_correction([row[:size] for row in X], y, features[:size], ridge)
    return cf + [0.0] * (k - size), {"loo_rmspe": scores, "chosen": ",".join(features[:size])}


def run_validation(table: LatencyTable, members: list[Spec], backend: Backend, *, warmup: int | None = None,
                   runs: int | None = None, progress: bool = True, out_dir: Path | None = None,
                   command: str | None = None, reference: bool = True) -> dict:
    """Predicted against measured for ``members``; with ``out_dir``, resumable from a checkpoint there and
    written as validate.json and validate.png (``command`` recorded)."""
    tune_allocator()
    checkpoint = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = out_dir / ".validate-partial.json"  # rerun the same command to resume
    report = validate(table, members, backend, warmup=warmup, runs=runs, progress=progress, checkpoint=checkpoint,
                      reference=reference)
    if out_dir is not None:
        write_report(report, out_dir, command)
        checkpoint.unlink(missing_ok=True)
    return report
