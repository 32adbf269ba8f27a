"""Why the supernet does not rank, and what fixes it: one change per row, the same budget per row.

    python scripts/supernet_ablation.py run [--variants NAME ...] [--workers 2]   # train + score (resumes)
    python scripts/supernet_ablation.py report                                    # ablation.json / ablation.md

Each variant is a :class:`nas.supernet.TrainConfig` that differs from today's recipe in one
setting (or a named combination), trained on the ground truth's images (the first 10,000 of
Fashion-MNIST's train split as ``nas-supernet train --limit-train 10000``, 28 px) for the same
number of epochs.  Then every architecture of ``results/ground_truth/table.json`` is scored with
inherited weights (BN recalibrated on 1,000 fixed training images, 2,000 held-out images), and
so are the *probes*: the sandwich's two ends moved one step along one choice in every stage,
which show where sharing breaks.  One JSON row per finished variant goes to
``results/supernet/ablation_rows.jsonl`` at once (the supernets stay in ``runs/supernet-ablation/``
and resume); a rerun skips finished variants.  Two worker processes, one torch thread each.
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

from _rows import read_rows, run_pool, spearman  # noqa: E402
from nas.atomic import atomic_write_text  # noqa: E402
from nas.spec import Spec  # noqa: E402

GT = ROOT / "results" / "ground_truth" / "table.json"
OUT = ROOT / "results" / "supernet"
ROWS = OUT / "ablation_rows.jsonl"
RUNS = ROOT / "runs" / "supernet-ablation"

# The budget every row shares (what differs is the variant's own settings).
BUDGET = {"space": "mnasnet-b0", "data": "fashion-mnist", "epochs": 2, "resolution": 28, "batch_size": 64,
          "limit_train": 10000, "eval_images": 1000}
SCORING = {"calibration_images": 1000, "val_images": 2000}

# name -> (what it changes, TrainConfig overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "today": ("largest + smallest (depthwise-separable branch) + 2 random; adamw recipe (weight decay 0.05, lr 0.012 per 256)", {}),
    "smallest-mbconv": ("the sandwich's narrow end on the MBConv branch (expand 3: the largest's own weights)",
                        {"smallest": "mbconv"}),
    "smallest-rotate": ("the narrow end rotates over the op branches (one per step)", {"smallest": "rotate"}),
    "largest+3-random": ("no narrow end: the largest and 3 uniformly random members", {"smallest": "none",
                                                                                        "random_members": 3}),
    "no-weight-decay": ("today's sandwich, weight decay 0", {"weight_decay": 0.0}),
    "zero-init-residual": ("today's sandwich, last BN scale 0 in layers that can add an identity (BigNAS)",
                           {"zero_init_residual": True}),
    "progressive": ("Once-for-All's progressive shrinking: the largest alone, then kernel, depth, width, SE, skip, "
                    "op made elastic one per phase (7 equal phases)", {"schedule": "progressive"}),
    "plain-bn": ("today's sandwich, each branch's last BN private to layers without a shortcut",
                 {"plain_bn": True}),
    "feature-distill": ("today's sandwich + stage-wise feature distillation from the largest (weight 1)",
                        {"feature_distill": 1.0}),
    "largest+3-random+feature-distill": ("the largest and 3 random members, stage-wise feature distillation (1)",
                                         {"smallest": "none", "random_members": 3, "feature_distill": 1.0}),
    "plain-bn+no-weight-decay": ("the two changes that ranked best alone, together", {"plain_bn": True,
                                                                                       "weight_decay": 0.0}),
    "today-seed1": ("today's recipe, seed 1 (the seed noise of a row)", {"seed": 1}),
    "plain-bn-seed1": ("plain-bn, seed 1", {"plain_bn": True, "seed": 1}),
    "blockwise": ("plain-bn, no weight decay; distilled members learn stage by stage on the largest's "
                  "features (DNA)", {"plain_bn": True, "weight_decay": 0.0, "distill": "blockwise"}),
    "sgd": ("today's sandwich with the resnet recipe (SGD, momentum 0.9, nesterov)", {"recipe": "resnet"}),
}


def _choices_probes(net) -> dict[str, dict]:
    """label -> choice dict: each end of the sandwich moved one step along one choice, in every stage."""
    ends = {"largest": net.largest.choices, "smallest": net.smallest.choices,
            "smallest-mbconv": net.smallest_of["mbconv"].choices}
    moves = {"largest": {"filters": [1.0, 0.75], "skip": ["identity", "none"], "op": ["mbconv3", "dwconv", "conv"],
                         "kernel": [3], "se": [0.0], "layers": [0, -1]},
             "smallest": {"filters": [1.0, 1.25], "skip": ["identity", "pool"], "op": ["mbconv3", "mbconv6", "conv"],
                          "kernel": [5], "se": [0.25], "layers": [0, 1]},
             "smallest-mbconv": {"filters": [1.0, 1.25], "skip": ["identity", "pool"], "op": ["mbconv6"],
                                 "kernel": [5], "se": [0.25], "layers": [0, 1]}}
    out = {}
    for end, base in ends.items():
        out[end] = base
        for key, values in moves[end].items():
            for v in values:
                out[f"{end} {key}={v}"] = {n: (v if n.endswith("_" + key) else c) for n, c in base.items()}
    return out


# ------------------------------------------------------------------ workers

def _init() -> None:
    import torch
    torch.set_num_threads(1)


def _work(name: str) -> dict:
    from nas.data import load_dataset
    from nas.supernet import SupernetEstimator, TrainConfig, train_supernet

    overrides = VARIANTS[name][1]
    cfg = TrainConfig(**{**BUDGET, **overrides})
    data = load_dataset(BUDGET["data"], seed=0)
    out = RUNS / name
    t0 = time.perf_counter()
    summary = train_supernet(cfg, data, out, progress=False)
    return _score_dir(name, VARIANTS[name][0], cfg.to_dict(), summary, data, out, t0)


def _score_dir(name, changes, config, summary, data, out, t0) -> dict:
    from nas.supernet import SupernetEstimator

    scoring = data.subset(BUDGET["limit_train"], SCORING["val_images"], seed=0)
    est = SupernetEstimator(out, scoring, resolution=BUDGET["resolution"],
                            calibration_images=SCORING["calibration_images"])
    gt = json.loads(GT.read_text())["rows"]
    scores = {}
    t1 = time.perf_counter()
    for r in gt:
        spec = Spec.from_dict(r["spec"])
        scores[spec.fingerprint()] = est(spec).score
    score_seconds = (time.perf_counter() - t1) / len(gt)
    probes = {label: est(est.net.space.decode(c)).score for label, c in _choices_probes(est.net).items()}
    return {"variant": name, "changes": changes, "config": config, "budget": BUDGET,
            "scoring": SCORING, "train_seconds": summary["train_seconds"],
            "train_cpu_seconds": summary["train_cpu_seconds"], "history": summary["history"],
            "seconds_per_member": score_seconds, "scores": scores, "probes": probes,
            "wall_seconds": time.perf_counter() - t0}


def score(args) -> None:
    """Score a supernet trained elsewhere (e.g. a default ``nas-supernet train``) as one more row."""
    from nas.data import load_dataset

    _init()
    out = Path(args.dir)
    summary = json.loads((out / "train.json").read_text())
    data = load_dataset(BUDGET["data"], seed=0)
    row = _score_dir(args.name, args.changes, summary["config"], summary, data, out, time.perf_counter())
    row["directory"] = str(out)
    with ROWS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{args.name}: rho {_rho(row):.3f}", file=sys.stderr)
    report(args)


def run(args) -> None:
    done = {r["variant"] for r in read_rows(ROWS)} if ROWS.exists() else set()
    todo = [v for v in (args.variants or VARIANTS) if v not in done]
    unknown = [v for v in todo if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variants {unknown}; variants: {', '.join(VARIANTS)}")
    OUT.mkdir(parents=True, exist_ok=True)

    def on_row(job, row):
        with ROWS.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rho = _rho(row)
        return f"{job}: rho {rho:.3f}, trained {row['train_seconds']:.0f} s"

    run_pool(todo, _work, workers=args.workers, initializer=_init, initargs=(), on_row=on_row, total=len(todo))
    report(args)


# ------------------------------------------------------------------ report

def _truth() -> tuple[list[str], np.ndarray, list[dict]]:
    rows = json.loads(GT.read_text())["rows"]
    fps = [Spec.from_dict(r["spec"]).fingerprint() for r in rows]
    acc = np.array([np.mean(list(r["accuracy"].values())) for r in rows])
    return fps, acc, rows


def _rho(row) -> float:
    fps, acc, _ = _truth()
    return spearman(acc, [row["scores"][f] for f in fps])


def kendall(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    da, db = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    s, ta, tb = (da * db)[iu].sum(), (da[iu] != 0).sum(), (db[iu] != 0).sum()
    return float(s / math.sqrt(ta * tb)) if ta and tb else float("nan")


def rho_ci(truth, score, seed: int = 0, n_boot: int = 2000) -> list[float]:
    rng = np.random.default_rng(seed)
    truth, score = np.asarray(truth, float), np.asarray(score, float)
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, len(truth), len(truth))
        if np.ptp(score[i]) > 0 and np.ptp(truth[i]) > 0:
            vals.append(spearman(truth[i], score[i]))
    return [float(v) for v in np.percentile(vals, [5, 95])]


def dimension_gaps(row, gt_rows, acc) -> dict:
    """Per (choice, value): Spearman of the gap (trained alone - inherited) with the member's count of
    stages holding that value.  Positive: the more stages hold it, the more inheritance loses."""
    fps = [Spec.from_dict(r["spec"]).fingerprint() for r in gt_rows]
    return choice_effects(acc - np.array([row["scores"][f] for f in fps]), gt_rows)


def choice_effects(values, gt_rows) -> dict:
    """Per (choice, value): Spearman of ``values`` (one per ground-truth architecture) with the number of
    stages holding that value: what a score rewards, choice by choice."""
    from search_spaces import SPACES
    from search_spaces.mnasnet import CHOICES
    space = SPACES["mnasnet-b0"]
    choices = [space.encode(Spec.from_dict(r["spec"])) for r in gt_rows]
    out = {}
    for key, vals in CHOICES.items():
        for v in vals:
            count = [sum(1 for n, c in ch.items() if n.endswith("_" + key) and c == v) for ch in choices]
            if np.ptp(count) > 0:
                out[f"{key}={v}"] = spearman(count, values)
    return out


def report(args=None) -> dict:
    fps, acc, gt_rows = _truth()
    rows = {r["variant"]: r for r in read_rows(ROWS)} if ROWS.exists() else {}
    table = {}
    for name, r in rows.items():
        s = np.array([r["scores"][f] for f in fps])
        table[name] = {"changes": VARIANTS.get(name, (r["changes"],))[0], "config": r["config"], "spearman": spearman(acc, s),
                       "spearman_ci90": rho_ci(acc, s), "kendall": kendall(acc, s),
                       "median_inherited": float(np.median(s)), "min_inherited": float(s.min()),
                       "max_inherited": float(s.max()), "median_gap": float(np.median(acc - s)),
                       "train_seconds": r["train_seconds"], "train_cpu_seconds": r["train_cpu_seconds"],
                       "seconds_per_member": r["seconds_per_member"], "probes": r["probes"],
                       "dimension_gaps": dimension_gaps(r, gt_rows, acc),
                       "choice_effects": choice_effects(s, gt_rows),
                       "last_epoch": r["history"][-1] if r["history"] else None}
    result = {"format": "nas-supernet-ablation", "version": 1,
              "command": "python scripts/supernet_ablation.py run", "budget": BUDGET, "scoring": SCORING,
              "ground_truth": {"n": len(fps), "median_accuracy": float(np.median(acc)),
                               "choice_effects": choice_effects(acc, gt_rows)},
              "status": "complete" if set(VARIANTS) <= set(rows) else "in progress", "variants": table}
    atomic_write_text(OUT / "ablation.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(OUT / "ablation.md", _markdown(result))
    return result


def _markdown(result) -> str:
    lines = [f"# Supernet ablation ({result['status']})", "",
             f"`{result['command']}`; budget {json.dumps(result['budget'])}; scoring {json.dumps(result['scoring'])}; "
             f"{result['ground_truth']['n']} ground-truth architectures (median trained alone "
             f"{result['ground_truth']['median_accuracy']:.3f}).", "",
             "| variant | changes | Spearman (90 % CI) | Kendall | median inherited | median gap | "
             "largest / smallest | train s (CPU s) |", "|---|---|---|---|---|---|---|---|"]
    for name, t in result["variants"].items():
        lo, hi = t["spearman_ci90"]
        last = t["last_epoch"] or {}
        ends = f"{last.get('largest_accuracy', float('nan')):.3f} / {last.get('smallest_accuracy', float('nan')):.3f}"
        lines.append(f"| {name} | {t['changes']} | {t['spearman']:.2f} ({lo:.2f}…{hi:.2f}) | {t['kendall']:.2f} | "
                     f"{t['median_inherited']:.3f} | {t['median_gap']:.3f} | {ends} | "
                     f"{t['train_seconds']:.0f} ({t['train_cpu_seconds']:.0f}) |")
    lines += ["", "## Probes: one step from each end of the sandwich (inherited accuracy)", ""]
    names = list(result["variants"])
    if names:
        labels = list(result["variants"][names[0]]["probes"])
        lines += ["| probe | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for label in labels:
            lines.append(f"| {label} | " + " | ".join(f"{result['variants'][n]['probes'].get(label, float('nan')):.3f}"
                                                        for n in names) + " |")
        lines += ["", "## Where inheritance loses: Spearman of (trained alone − inherited) with the number of "
                  "stages holding a value", ""]
        keys = list(result["variants"][names[0]]["dimension_gaps"])
        lines += ["| choice | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(f"{result['variants'][n]['dimension_gaps'].get(k, float('nan')):+.2f}"
                                                   for n in names) + " |")
        lines += ["", "## What each score rewards: Spearman of the score with the number of stages holding a value",
                  "", "| choice | ground truth | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        gt = result["ground_truth"]["choice_effects"]
        for k in gt:
            lines.append(f"| {k} | {gt[k]:+.2f} | " + " | ".join(
                f"{result['variants'][n]['choice_effects'].get(k, float('nan')):+.2f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--variants", nargs="+", help=f"default: all ({', '.join(VARIANTS)})")
    r.add_argument("--workers", type=int, default=2)
    sc = sub.add_parser("score", help="score a supernet trained elsewhere as a row")
    sc.add_argument("dir")
    sc.add_argument("--name", required=True)
    sc.add_argument("--changes", required=True, help="what the row is (its settings are read from the folder)")
    sub.add_parser("report")
    args = ap.parse_args()
    {"run": run, "score": score, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
