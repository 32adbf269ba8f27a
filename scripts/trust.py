"""How far can each estimator be trusted?  Every estimator against the ground truth.

    python scripts/trust.py                 # all estimators on every finished ground-truth architecture
    python scripts/trust.py --only proxy    # a subset (names starting with the given prefix)
    python scripts/trust.py --report        # rewrite trust.json / trust.png from the rows, no measuring
    python scripts/trust.py --supernet runs/sn --only supernet   # a trained supernet (nas-supernet train) as "supernet"

Reads ``results/ground_truth/table.json`` (``scripts/ground_truth.py``), scores each of its
architectures with every estimator of :data:`ESTIMATOR_SETTINGS` through the toolkit's own
estimator registry (``nas.estimators.make_estimator``: what ``nas-search --estimator`` runs),
and writes ``results/evaluation/trust.json``::

    {"n_architectures": N, "estimators": {NAME: {"spearman", "kendall", "top10_overlap",
     "seconds_per_architecture", "sign", "n", "spearman_ci90"}}, ...}

and ``trust.png`` (Spearman rho against seconds per architecture: the trust-cost frontier).
The ground truth of an architecture is its mean accuracy over the seeds it was trained with.
Training-free proxies are used with the sign the data supports (``sign``: -1 means the
negated score ranks; chosen on these same architectures, so their rho is optimistic by the
choice of one bit).  Each score is appended to ``trust_rows.jsonl`` at once; a rerun resumes.
Two worker processes, one torch thread each; seconds are wall seconds of one worker.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _rows import read_ground_truth, read_rows, spearman  # noqa: E402
from nas.cost import cost  # noqa: E402
from nas.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from nas.spec import Spec  # noqa: E402

GT = ROOT / "results" / "ground_truth" / "table.json"
OUT = ROOT / "results" / "evaluation"

# name -> (estimator registry name, data source, (train images, val images), estimator options)
# The first is the search's default today (nas.estimators: 1 epoch of the embedded sample at
# 16 px); the fashion-mnist rungs are the fidelities a successive-halving search would use,
# each ~3x the one before, below the ground truth's 80,000 image passes.
ESTIMATOR_SETTINGS: dict[str, tuple[str, str, tuple[int, int] | None, dict]] = {
    "train:sample-16px-1ep": ("train", "sample", None, {"resolution": 16, "epochs": 1}),
    "train:fmnist-28px-3k-1ep": ("train", "fashion-mnist", (3000, 2000), {"resolution": 28, "epochs": 1}),
    "train:fmnist-28px-5k-2ep": ("train", "fashion-mnist", (5000, 2000), {"resolution": 28, "epochs": 2}),
    "train:fmnist-28px-10k-3ep": ("train", "fashion-mnist", (10000, 2000), {"resolution": 28, "epochs": 3}),
}
PROXY_DATA = ("fashion-mnist", (3000, 2000))
FREE = ("params", "flops")  # counted from the spec, no data: seconds ~0


def _proxy_names() -> list[str]:
    from nas.estimators import ESTIMATORS
    return [n for n in ESTIMATORS if n.startswith("proxy:") and n.split(":", 1)[1] not in FREE]


# ------------------------------------------------------------------ statistics

def kendall(a, b) -> float:
    """Kendall's tau-b (ties in either variable handled as in scipy.stats.kendalltau)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    s, ta, tb = (da * db)[iu].sum(), (da[iu] != 0).sum(), (db[iu] != 0).sum()
    return float(s / math.sqrt(ta * tb)) if ta and tb else float("nan")


def top_overlap(truth, score, fraction: float = 0.1) -> float:
    """Share of the ground truth's top ``fraction`` that the estimator also puts in its top ``fraction``."""
    k = max(1, int(math.ceil(fraction * len(truth))))
    t = set(np.argsort(-np.asarray(truth, float), kind="stable")[:k])
    s = set(np.argsort(-np.asarray(score, float), kind="stable")[:k])
    return len(t & s) / k


def rho_interval(truth, score, rng, n_boot: int = 2000) -> list[float]:
    truth, score = np.asarray(truth, float), np.asarray(score, float)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(truth), len(truth))
        if len(set(i)) > 3 and np.ptp(score[i]) > 0 and np.ptp(truth[i]) > 0:
            vals.append(spearman(truth[i], score[i]))
    return [float(v) for v in np.percentile(vals, [5, 95])]


# ------------------------------------------------------------------ workers

_DATA: dict = {}


def _init(data):
    global _DATA
    import torch
    torch.set_num_threads(1)
    _DATA = data


def _is_supernet(name: str) -> bool:
    """``supernet`` (2,000 calibration images) or ``supernet@N`` (N: the calibration study)."""
    return name == "supernet" or name.startswith("supernet@")


def _score(job):
    name, fingerprint, spec_json = job
    from nas.estimators import make_estimator
    spec = Spec.from_json(spec_json)
    if name.startswith("proxy:"):
        est = make_estimator(name, _DATA["proxy"])
    elif _is_supernet(name):
        extra = {"calibration_images": int(name.split("@", 1)[1])} if "@" in name else {}
        est = make_estimator(f"supernet:{_DATA['supernet_dir']}", _DATA["supernet"], resolution=28, **extra)
    else:
        reg, source, sizes, options = ESTIMATOR_SETTINGS[name]
        est = make_estimator(reg, _DATA[name], **options)
    t0 = time.perf_counter()
    e = est(spec)
    return {"estimator": name, "fingerprint": fingerprint, "score": e.score, "failed": e.failed, "reason": e.reason,
            "seconds": time.perf_counter() - t0}


def _datasets(names) -> dict:
    from nas.data import load_dataset
    cache, out = {}, {}

    def get(source, sizes):
        if (source, sizes) not in cache:
            d = load_dataset(source, seed=0)
            cache[(source, sizes)] = d.subset(*sizes, seed=0) if sizes else d
        return cache[(source, sizes)]

    for n in names:
        if n.startswith("proxy:"):
            out["proxy"] = get(*PROXY_DATA)
        elif _is_supernet(n):
            out["supernet"] = get("fashion-mnist", (10000, 5000))  # the ground truth's split: what it trained on
        else:
            _, source, sizes, _ = ESTIMATOR_SETTINGS[n]
            out[n] = get(source, sizes)
    return out


def _rows(path: Path) -> dict[tuple[str, str], dict]:
    return {(r["estimator"], r["fingerprint"]): r for r in read_rows(path)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="estimators whose name starts with this prefix")
    ap.add_argument("--first", type=int, metavar="N",
                    help="measure only on the first N ground-truth architectures (the report still covers all rows)")
    ap.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                    help="measure none of these estimators (their existing rows still count)")
    ap.add_argument("--report", action="store_true", help="no measuring: rewrite trust.json from the rows")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--supernet", metavar="DIR", help="also score with the supernet trained into DIR (as 'supernet')")
    ap.add_argument("--calibration-images", type=int, nargs="+", default=[], metavar="N",
                    help="with --supernet: also score with N images for BN recalibration (as 'supernet@N'; "
                         "'supernet' uses the default 2000)")
    args = ap.parse_args(argv)

    table = read_ground_truth(GT)
    archs = [r for r in table["rows"] if any(v is not None for v in r["accuracy"].values())]
    specs = [Spec.from_dict(r["spec"]) for r in archs]
    truth = np.array([np.mean([v for v in r["accuracy"].values() if v is not None]) for r in archs])
    names = _proxy_names() + list(ESTIMATOR_SETTINGS)  # cheap first
    if args.supernet:
        names.append("supernet")
        names += [f"supernet@{n}" for n in args.calibration_images]
    measure = [n for n in names if n.startswith(args.only)] if args.only else names  # the report covers all
    measure = [n for n in measure if n not in args.skip]
    rows_path = OUT / "trust_rows.jsonl"
    done = _rows(rows_path)
    todo = [(n, s.fingerprint(), s.to_json(None)) for n in measure for s in specs[:args.first]
            if (n, s.fingerprint()) not in done]
    if todo and not args.report:
        print(f"{len(todo)} scores to measure over {len(specs)} architectures", file=sys.stderr, flush=True)
        import multiprocessing as mp
        t0 = time.perf_counter()
        data = _datasets({j[0] for j in todo})
        data["supernet_dir"] = args.supernet
        with open(rows_path, "a") as log, mp.get_context("fork").Pool(args.workers, _init, (data,)) as pool:
            for k, row in enumerate(pool.imap(_score, todo), 1):
                log.write(json.dumps(row) + "\n")
                log.flush()
                done[(row["estimator"], row["fingerprint"])] = row
                el = time.perf_counter() - t0
                print(f"[{k}/{len(todo)} | {el / 60:.1f} min, ETA {el / k * (len(todo) - k) / 60:.0f} min] "
                      f"{row['estimator']}: {row['score']} ({row['seconds']:.1f} s)", file=sys.stderr, flush=True)

    rng = np.random.default_rng(0)
    result = {"n_architectures": len(specs), "ground_truth": "results/ground_truth/table.json (" +
              table["status"] + "); mean accuracy over the seeds each architecture was trained with",
              "command": "python scripts/trust.py" + "".join(
                  f" {a}" for a in (argv if argv is not None else sys.argv[1:]) if a != "--report"),
              "estimators": {}}
    fps = [s.fingerprint() for s in specs]
    free = {"params": [cost(s).params for s in specs], "flops": [cost(s).flops for s in specs]}
    for n in names + list(FREE):
        if n in FREE:
            score, secs, sel = np.array(free[n], float), 0.0, np.arange(len(specs))
        else:
            got = [done.get((n, f)) for f in fps]
            sel = np.array([i for i, r in enumerate(got) if r and not r["failed"] and r["score"] is not None])
            if len(sel) < 5:
                continue
            score = np.array([got[i]["score"] for i in sel], float)
            secs = float(np.mean([r["seconds"] for r in got if r]))
        t = truth[sel]
        rho = spearman(t, score)
        sign = -1 if (n.startswith("proxy:") or n in FREE) and rho < 0 else 1
        score = sign * score
        result["estimators"][n] = {
            "spearman": sign * rho, "kendall": kendall(t, score), "top10_overlap": top_overlap(t, score),
            "seconds_per_architecture": secs, "sign": sign, "n": int(len(sel)),
            "spearman_ci90": rho_interval(t, score, rng)}
    if args.supernet:
        train = json.loads((Path(args.supernet) / "train.json").read_text())
        for n in result["estimators"]:
            if _is_supernet(n):
                result["estimators"][n]["training_seconds"] = train.get("seconds", train.get("train_seconds"))
                result["estimators"][n]["directory"] = args.supernet
    if "spearman_seed0_seed1" in table["summary"]:
        result["ground_truth_seed_rho"] = table["summary"]["spearman_seed0_seed1"]
    atomic_write_text(OUT / "trust.json", json.dumps(result, indent=1) + "\n")
    _plot(result, OUT / "trust.png")
    for n, e in sorted(result["estimators"].items(), key=lambda kv: -kv[1]["spearman"]):
        print(f"{n:30s} rho {e['spearman']:+.3f} [{e['spearman_ci90'][0]:+.2f}, {e['spearman_ci90'][1]:+.2f}] "
              f"tau {e['kendall']:+.3f} top10 {e['top10_overlap']:.2f} {e['seconds_per_architecture']:8.2f} s "
              f"(sign {e['sign']:+d}, n {e['n']})")
    return 0


def _plot(result, path: Path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for n, e in result["estimators"].items():
        x = max(e["seconds_per_architecture"], 1e-3)
        ax.errorbar(x, e["spearman"], yerr=[[e["spearman"] - e["spearman_ci90"][0]],
                                            [e["spearman_ci90"][1] - e["spearman"]]], fmt="o", capsize=3)
        label = n + (" (negated)" if e["sign"] < 0 else "")
        ax.annotate(label, (x, e["spearman"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    if "ground_truth_seed_rho" in result:
        ax.axhline(result["ground_truth_seed_rho"], color="grey", lw=0.8, ls="--")
        ax.annotate("ground truth, seed 0 vs seed 1", (1e-3, result["ground_truth_seed_rho"]), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per architecture (one core; params/FLOPs drawn at 1 ms)")
    ax.set_ylabel("Spearman rho with the ground truth (90 % bootstrap)")
    ax.set_title(f"trust against cost, {result['n_architectures']} ground-truth architectures", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
