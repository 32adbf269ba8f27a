"""The search's output folder: best.json, trials.csv, summary.json, pareto.png (each written atomically),
and the one-screen summary on stdout; all read from a :class:`~nas.search.session.SearchResult`."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text
from ..spec import Spec
from .session import SearchResult

__all__ = ["write_outputs", "summary_dict", "summary_text", "trials_csv", "best_spec", "pareto_png"]


def _summary_entry(r: dict | None) -> dict | None:
    if r is None:
        return None
    out = {k: r.get(k) for k in ("reward", "accuracy", "score", "flops", "latency", "fingerprint", "number")}
    if r.get("benchmark_key") is not None:  # a benchmark's space: the member's key in its table
        out["benchmark_key"] = r["benchmark_key"]
    return out


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
        "target": {"metric": cfg.metric, "value": cfg.target,
                   **({"flops_convention": cfg.flops_convention} if cfg.flops_convention != "fvcore" else {})},
        "reward": cfg.reward().to_dict(),
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "space": cfg.space,
        "estimator": res.estimator,
        "accuracy_map": res.accuracy_map,
        "study_name": res.study_name,
        "storage": res.storage,
        "latency_threads": res.extra.get("latency_threads"),
        # with --latency-table the trials' latency is predicted; the best is also measured as the table was
        "best_latency_measured": res.extra.get("best_latency_measured"),
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
    if res.config.target is not None:
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


def write_outputs(res: SearchResult, folder: str | Path, weights=None) -> list[Path]:
    """The output files; ``weights`` (spec -> state dict, e.g. a supernet estimator's ``state_dict``)
    adds ``best.weights.pt``: the best architecture's inherited weights, ready to export or fine-tune."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    spec = best_spec(res)
    if spec is not None:
        atomic_write_text(folder / "best.json", spec.to_json() + "\n")
        written.append(folder / "best.json")
        if weights is not None:
            import io

            import torch

            buf = io.BytesIO()
            torch.save(weights(spec), buf)
            atomic_write_bytes(folder / "best.weights.pt", buf.getvalue())
            written.append(folder / "best.weights.pt")
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
    aim = ("no target: reward = accuracy" if cfg.target is None else
           f"target {fmt_cost(cfg.target)} {key}, {cfg.constraint} constraint (alpha {s['reward']['alpha']}, "
           f"beta {s['reward']['beta']})")
    lines = [f"nas-search: {cfg.space}, strategy {cfg.strategy}, seed {cfg.seed}, estimator {res.estimator.get('name')}",
             f"{aim}; {s['n_trials_complete']} complete / {s['n_trials_failed']} failed trials "
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
        if res.best.get("benchmark_key") is not None:
            lines.append(f"best's benchmark key: {res.best['benchmark_key']} (accuracy {res.best['accuracy']:.5f} "
                         f"in the {cfg.space} table)")
    if res.accuracy_map.get("kind") != "identity":
        lines.append("accuracy = proxy score mapped by a fixed logistic anchored at B0 (not a measured accuracy)")
    if res.stopped_reason:
        lines.append(res.stopped_reason)
    return "\n".join(lines)
