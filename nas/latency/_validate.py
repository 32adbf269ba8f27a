"""Predicted against measured latency on random members of the space, and the noise floor.

Every member is measured twice, in two passes over all members (so slow drifts of
the machine's load show up as noise too).  The prediction is scored against the
first measurement; the second measurement scored against the first is the noise
floor: what a perfect predictor would score against one measurement.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import time
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_write_bytes, atomic_write_text
from ..spec import Spec
from ._backends import Backend
from ._build import measure_network
from ._table import LatencyTable, predict

__all__ = ["agreement", "validate", "write_report"]


def agreement(predicted: Sequence[float], measured: Sequence[float], tolerance: float = 0.10) -> dict:
    """Share within ±tolerance of the measurement, RMSPE and the worst relative error (signed)."""
    errors = [p / m - 1.0 for p, m in zip(predicted, measured)]
    if not errors:
        raise ValueError("no pairs to compare")
    worst = max(range(len(errors)), key=lambda i: abs(errors[i]))
    return {"n": len(errors),
            "within_10pct": sum(abs(e) <= tolerance for e in errors) / len(errors),
            "rmspe": math.sqrt(math.fsum(e * e for e in errors) / len(errors)),
            "mean_error": math.fsum(errors) / len(errors),
            "worst_error": errors[worst], "worst_index": worst}


def _load_checkpoint(path: Path | None, ident: dict) -> dict:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # a torn checkpoint is only a cache: measure again
    if not isinstance(data, dict) or data.get("ident") != ident or not isinstance(data.get("measured"), dict):
        return {}
    return data["measured"]


def validate(table: LatencyTable, members: Sequence[Spec], backend: Backend, *, warmup: int | None = None,
             runs: int | None = None, progress: bool = False, checkpoint: str | Path | None = None) -> dict:
    """Predict and measure (twice) every member; ``checkpoint`` (a JSON file) makes it resumable.

    Every measurement is written to ``checkpoint`` as it is made; a rerun with the same
    table, protocol and members takes them from there and measures only the rest.
    """
    warmup = table.protocol["warmup"] if warmup is None else warmup
    runs = table.protocol["runs"] if runs is None else runs
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    ident = {"table": hashlib.sha256(json.dumps(table.to_dict(), sort_keys=True).encode()).hexdigest()[:16],
             "warmup": warmup, "runs": runs, "members": [s.fingerprint() for s in members]}
    done = _load_checkpoint(checkpoint, ident)
    rows = []
    t0 = time.perf_counter()
    for spec in members:
        rows.append({"name": spec.name, "fingerprint": spec.fingerprint(), "short": spec.short(),
                     "predicted": predict(spec, table)})
    predict_seconds = (time.perf_counter() - t0) / len(members)
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=2 * len(members), desc="validate", unit="net", dynamic_ncols=True, leave=False)
    measure_seconds = []
    try:
        for key in ("measured", "measured_again"):
            for i, (spec, row) in enumerate(zip(members, rows)):
                ck = f"{key}:{i}"
                if ck in done:
                    row[key] = float(done[ck])
                    if bar is not None:
                        bar.update(1)
                    continue
                t = time.perf_counter()
                row[key] = measure_network(spec, backend, threads=table.threads, warmup=warmup, runs=runs,
                                           clock=table.protocol["clock"],
                                           evict_bytes=table.protocol["evict_bytes"])
                measure_seconds.append(time.perf_counter() - t)
                done[ck] = row[key]
                if checkpoint is not None:
                    atomic_write_text(checkpoint, json.dumps({"ident": ident, "measured": done}))
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    pred = agreement([r["predicted"] for r in rows], [r["measured"] for r in rows])
    noise = agreement([r["measured_again"] for r in rows], [r["measured"] for r in rows])
    w = rows[pred.pop("worst_index")]
    wn = rows[noise.pop("worst_index")]
    return {
        **pred,
        "worst": {"fingerprint": w["fingerprint"], "short": w["short"], "predicted": w["predicted"],
                  "measured": w["measured"]},
        "noise": {**noise, "worst": {"fingerprint": wn["fingerprint"], "measured": wn["measured"],
                                     "measured_again": wn["measured_again"]}},
        "seconds_per_prediction": predict_seconds,
        "seconds_per_measurement": sum(measure_seconds) / len(measure_seconds) if measure_seconds else None,
        "protocol": {"batch": 1, "warmup": warmup, "runs": runs, "statistic": "median",
                     "clock": table.protocol["clock"], "evict_bytes": table.protocol["evict_bytes"]},
        "table": {"space": table.space, "resolution": table.resolution, "backend": table.backend,
                  "device": table.device, "threads": table.threads, "machine": table.machine,
                  "versions": table.versions, "entries": len(table.entries), "overhead": table.overhead},
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
    ms = [r["measured"] * 1e3 for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(ms, [r["predicted"] * 1e3 for r in rows], s=12, label="predicted")
    ax.scatter(ms, [r["measured_again"] * 1e3 for r in rows], s=10, marker="x", alpha=0.6,
               label="measured again (noise)")
    lo, hi = min(ms) * 0.85, max(ms) * 1.15
    xs = [lo, hi]
    ax.plot(xs, xs, "k-", lw=0.8)
    ax.plot(xs, [v * 1.1 for v in xs], "k--", lw=0.6, label="±10 %")
    ax.plot(xs, [v * 0.9 for v in xs], "k--", lw=0.6)
    t = report["table"]
    ax.set_xlabel("measured latency (ms, median)")
    ax.set_ylabel("ms")
    ax.set_title(f"{t['backend']} {t['device']}, {t['threads']} thread(s), {t['resolution']} px\n"
                 f"within ±10 %: {report['within_10pct']:.0%} (noise {report['noise']['within_10pct']:.0%}), "
                 f"RMSPE {report['rmspe']:.1%}, n={report['n']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png, js = out / "validate.png", out / "validate.json"
    atomic_write_bytes(png, buf.getvalue())
    atomic_write_text(js, json.dumps({"command": command, **report}, indent=1) + "\n")
    return [js, png]
