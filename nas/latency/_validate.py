"""Predicted against measured latency on random members of the space, and the noise floor.

Every member is measured twice, apart: two passes over all members, each timing members in
interleaved chunks (:data:`nas.latency.NET_CHUNK`) with the protocol (:mod:`nas.latency._protocol`),
the second pass in another (seeded) order, so a member meets other neighbours and a slow drift of
the machine shows up as noise.  A reference model (the space's skeleton) is timed in every round of
every chunk, so the duet-normalised figure can be compared with the raw one on the same passes.

* **the floor**: the share of members whose two measurements agree within ±10 % of their mean
  (``|m1 - m2| <= 0.1 * (m1 + m2) / 2``): what the measurement itself allows;
* **the predictor**: the share within ±10 % of the mean of the two measurements, RMSPE, worst,
  Spearman's rank correlation (HELP's metric) and FLOPs' Spearman beside it; against the first
  measurement alone too (the old figure).

``alternatives`` recomputes both from the same passes for every statistic, raw and duet-normalised.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import random
import time
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_write_bytes, atomic_write_text
from ..spec import Spec
from ._backends import Backend
from ._build import NET_CHUNK, measure_networks, reference_spec
from ._protocol import STATISTICS, Protocol, Timing, load_record
from ._table import LatencyTable, predict

__all__ = ["agreement", "floor_agreement", "spearman", "validate", "write_report"]


def agreement(predicted: Sequence[float], measured: Sequence[float], tolerance: float = 0.10) -> dict:
    """Share within ±tolerance of the measurement, RMSPE and the worst relative error (signed)."""
    return _error_summary([p / m - 1.0 for p, m in zip(predicted, measured)], tolerance)


def floor_agreement(first: Sequence[float], again: Sequence[float], tolerance: float = 0.10) -> dict:
    """Two measurements of the same members: the share whose difference is within ±tolerance of their mean
    (the noise floor), the RMS and the worst of ``(again - first) / mean``."""
    return _error_summary([(b - a) / ((a + b) / 2) for a, b in zip(first, again)], tolerance)


def _error_summary(errors: list[float], tolerance: float) -> dict:
    """Relative errors -> the share within ±tolerance, RMS, mean and the worst (signed, with its index)."""
    if not errors:
        raise ValueError("no pairs to compare")
    worst = max(range(len(errors)), key=lambda i: abs(errors[i]))
    return {"n": len(errors),
            "within_10pct": sum(abs(e) <= tolerance for e in errors) / len(errors),
            "rmspe": math.sqrt(math.fsum(e * e for e in errors) / len(errors)),
            "mean_error": math.fsum(errors) / len(errors),
            "worst_error": errors[worst], "worst_index": worst}


def _ranks(xs: Sequence[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); NaN when either side is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError("spearman needs two sequences of the same length >= 2")
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = math.fsum(ra) / len(ra), math.fsum(rb) / len(rb)
    cov = math.fsum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = math.fsum((x - ma) ** 2 for x in ra)
    vb = math.fsum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else float("nan")


def _load_checkpoint(path: Path | None, ident: dict) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a torn checkpoint is only a cache: measure again
    if not isinstance(data, dict) or data.get("ident") != ident or not isinstance(data.get("measured"), dict):
        return {}
    return data


def pass_orders(n: int, seed: int = 0) -> list[list[int]]:
    """The members' order in the two passes: as drawn, then a seeded shuffle (other neighbours, other chunks)."""
    second = list(range(n))
    random.Random(seed).shuffle(second)
    return [list(range(n)), second]


def _scores(predicted, m1, m2, flops) -> dict:
    mean = [(a + b) / 2 for a, b in zip(m1, m2)]
    pred = agreement(predicted, mean)
    pred.pop("worst_index")
    floor = floor_agreement(m1, m2)
    floor.pop("worst_index")
    first = agreement(predicted, m1)
    return {"predictor": {**pred, "spearman": spearman(predicted, mean)},
            "floor": floor,
            "predictor_vs_first": {k: first[k] for k in ("within_10pct", "rmspe")},
            "flops_spearman": spearman(flops, mean) if flops else None}


def validate(table: LatencyTable, members: Sequence[Spec], backend: Backend, *, warmup: int | None = None,
             runs: int | None = None, protocol: Protocol | None = None, progress: bool = False,
             checkpoint: str | Path | None = None, chunk: int = NET_CHUNK, reference: Spec | None | bool = True,
             order_seed: int = 0) -> dict:
    """Predict every member and measure it twice, apart; ``checkpoint`` (a JSON file) makes it resumable.

    ``protocol``: default the table's (``warmup``/``runs`` override its counts).  ``reference``: True
    times the space's skeleton in every round (the duet reference; a spec names another, False none).
    Every chunk's measurements are written to ``checkpoint`` as they are made; a rerun with the same
    table, protocol and members takes them from there and measures only the rest.
    """
    from dataclasses import replace

    from ..cost import cost

    p = protocol or table.measure_protocol()
    if warmup is not None:
        p = replace(p, warmup=warmup)
    if runs is not None:
        p = replace(p, runs=runs)
    if reference is True:
        from search_spaces import get_space

        reference = reference_spec(get_space(table.space), table.resolution)
    elif reference is False:
        reference = None
    if p.duet and reference is None:
        raise ValueError("a duet protocol needs a reference")
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    ident = {"table": hashlib.sha256(json.dumps(table.to_dict(), sort_keys=True).encode()).hexdigest()[:16],
             "protocol": p.to_dict(), "members": [s.fingerprint() for s in members],
             "reference": reference.fingerprint() if reference is not None else None, "chunk": chunk,
             "order_seed": order_seed}
    state = _load_checkpoint(checkpoint, ident)
    done: dict = state.get("measured", {})
    baseline = state.get("baseline")
    if baseline is None and reference is not None and table.reference is not None \
            and table.reference.get("fingerprint") == reference.fingerprint():
        baseline = table.reference["seconds"]  # the duet scale the correction was fitted on
    load_before = state.get("load_before") or load_record()
    rows = []
    t0 = time.perf_counter()
    for spec in members:
        rows.append({"name": spec.name, "fingerprint": spec.fingerprint(), "short": spec.short(),
                     "predicted": predict(spec, table)})
    predict_seconds = (time.perf_counter() - t0) / len(members)
    for spec, row in zip(members, rows):
        row["flops"] = float(cost(spec).flops)
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=2 * len(members), desc="validate", unit="net", dynamic_ncols=True, leave=False)
    measure_seconds: list[float] = []

    def save():
        if checkpoint is not None:
            atomic_write_text(checkpoint, json.dumps({"ident": ident, "measured": done, "baseline": baseline,
                                                      "load_before": load_before}))

    try:
        for k, order in enumerate(pass_orders(len(members), order_seed)):
            for c in range(0, len(order), chunk):
                idx = order[c:c + chunk]
                todo = [i for i in idx if f"{k}:{i}" not in done]
                if bar is not None:
                    bar.update(len(idx) - len(todo))
                if not todo:
                    continue
                t = time.perf_counter()
                timings, ref = measure_networks([members[i] for i in todo], backend, p, reference=reference,
                                                reference_seconds=baseline)
                measure_seconds.append((time.perf_counter() - t) / len(todo))
                if ref is not None and baseline is None:
                    baseline = ref.baseline  # the first chunk's reference: one scale for every chunk and pass
                for i, tm in zip(todo, timings):
                    done[f"{k}:{i}"] = tm.to_dict()
                save()
                if bar is not None:
                    bar.update(len(todo))
    finally:
        if bar is not None:
            bar.close()
    timings = {key: Timing.from_dict(v) for key, v in done.items()}
    for i, row in enumerate(rows):
        a, b = timings[f"0:{i}"], timings[f"1:{i}"]
        row.update(measured=a.seconds, measured_again=b.seconds, measured_mean=(a.seconds + b.seconds) / 2,
                   spread=a.rel_spread, spread_again=b.rel_spread, timings=[a.to_dict(), b.to_dict()])
    predicted = [r["predicted"] for r in rows]
    main = _scores(predicted, [r["measured"] for r in rows], [r["measured_again"] for r in rows],
                   [r["flops"] for r in rows])
    alternatives = {}
    for stat in STATISTICS:
        for duet in ((False, True) if reference is not None else (False,)):
            m1 = [timings[f"0:{i}"].figure(stat, duet) for i in range(len(rows))]
            m2 = [timings[f"1:{i}"].figure(stat, duet) for i in range(len(rows))]
            sc = _scores(predicted, m1, m2, None)
            alternatives[f"{stat}{'+duet' if duet else ''}"] = {
                "floor_within_10pct": sc["floor"]["within_10pct"], "floor_rmspe": sc["floor"]["rmspe"],
                "predictor_within_10pct": sc["predictor"]["within_10pct"], "predictor_rmspe": sc["predictor"]["rmspe"],
                "spearman": sc["predictor"]["spearman"]}
    pred, floor = main["predictor"], main["floor"]
    worst = max(range(len(rows)), key=lambda i: abs(rows[i]["predicted"] / rows[i]["measured_mean"] - 1))
    wn = max(range(len(rows)), key=lambda i: abs(rows[i]["measured_again"] - rows[i]["measured"]) / rows[i]["measured_mean"])
    per_measurement = sum(measure_seconds) / len(measure_seconds) if measure_seconds else None
    w = rows[worst]
    return {
        **pred,
        "against": "the mean of the two measurements",
        "predictor_vs_first": main["predictor_vs_first"],
        "flops_spearman": main["flops_spearman"],
        "floor": floor["within_10pct"],
        "predictor_over_floor": pred["within_10pct"] / floor["within_10pct"] if floor["within_10pct"] else None,
        "worst": {"fingerprint": w["fingerprint"], "short": w["short"], "predicted": w["predicted"],
                  "measured": w["measured_mean"]},
        "noise": {**floor, "definition": "|m2 - m1| <= 10 % of their mean",
                  "worst": {"fingerprint": rows[wn]["fingerprint"], "measured": rows[wn]["measured"],
                            "measured_again": rows[wn]["measured_again"]}},
        "alternatives": alternatives,
        "seconds_per_prediction": predict_seconds,
        "seconds_per_measurement": per_measurement,
        "speed_ratio": per_measurement / predict_seconds if per_measurement and predict_seconds else None,
        "protocol": p.to_dict(),
        "reference": ({"name": reference.name, "fingerprint": reference.fingerprint(), "baseline": baseline}
                      if reference is not None else None),
        "load": {"before": load_before, "after": load_record()},
        "table": {"space": table.space, "resolution": table.resolution, "backend": table.backend,
                  "device": table.device, "threads": table.threads, "machine": table.machine,
                  "versions": table.versions, "entries": len(table.entries), "overhead": table.overhead,
                  "correction": ({k: table.correction[k] for k in ("features", "coef", "seed", "ridge")}
                                 | {"members": len(table.correction["members"])}
                                 if table.correction else None)},
        "rows": rows,
    }


def write_report(report: dict, out_dir: str | Path, command: str) -> list[Path]:
    """``validate.json`` and ``validate.png`` (predicted vs measured, with ±10 % lines) in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = report["rows"]
    ms = [r["measured_mean"] * 1e3 for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(ms, [r["predicted"] * 1e3 for r in rows], s=12, label="predicted")
    ax.scatter(ms, [r["measured_again"] * 1e3 for r in rows], s=10, marker="x", alpha=0.6,
               label="2nd measurement (noise)")
    lo, hi = min(ms) * 0.85, max(ms) * 1.15
    xs = [lo, hi]
    ax.plot(xs, xs, "k-", lw=0.8)
    ax.plot(xs, [v * 1.1 for v in xs], "k--", lw=0.6, label="±10 %")
    ax.plot(xs, [v * 0.9 for v in xs], "k--", lw=0.6)
    t = report["table"]
    ax.set_xlabel(f"measured latency (ms, mean of two {report['protocol'].get('statistic', 'median')}s)")
    ax.set_ylabel("ms")
    ax.set_title(f"{t['backend']} {t['device']}, {t['threads']} thread(s), {t['resolution']} px\n"
                 f"within ±10 %: {report['within_10pct']:.0%} (floor {report['floor']:.0%}), "
                 f"RMSPE {report['rmspe']:.1%}, Spearman {report['spearman']:.3f}, n={report['n']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png, js = out / "validate.png", out / "validate.json"
    atomic_write_bytes(png, buf.getvalue())
    atomic_write_text(js, json.dumps({"command": command, **report}, indent=1) + "\n")
    return [js, png]
