"""Does trained accuracy rise with FLOPs enough for the soft reward to land on its target?

With the soft reward (α = β = w) the search maximizes ACC·(C/T)^w = T^-w · ACC·C^w,
so the target T multiplies every reward by the same constant and cannot move the
argmax: the search lands where the accuracy's cost elasticity
e = d ln ACC / d ln C equals -w (0.07, i.e. +5 % relative accuracy per doubling
of FLOPs).  This study measures e on the data, along a ladder of members of the
``mnasnet-b0`` space that differ only in size: every stage with B0's op, kernel,
SE and skip, and one filter multiplier and one layer delta for all stages.

    python scripts/capacity_study.py --train-images 12000 --epochs 3 --resolution 28

writes ``results/search/capacity/capacity.json`` and ``capacity.png``: per
architecture its FLOPs and held-out accuracy after every epoch, the fitted
elasticity per epoch (with a bootstrap interval), and which rung the soft and
hard rewards at 400M would pick.  Rows are appended to ``rows.jsonl`` as they
finish, so an interrupted run resumes (rows of another configuration are ignored).
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

from _rows import config_key, finished_rows  # noqa: E402
from nas.cost import cost  # noqa: E402
from nas.reward import Reward  # noqa: E402
from nas.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from nas.spec import Spec  # noqa: E402
from search_spaces import SPACES  # noqa: E402

# (filter multiplier, layer delta) for every stage; (1.0, 0) is EfficientNet-B0 itself
LADDER = ((0.75, -1), (0.75, 0), (1.0, -1), (1.0, 0), (1.25, 0), (1.0, 1), (1.25, 1))


def ladder_specs(space_name: str = "mnasnet-b0") -> list[tuple[str, Spec]]:
    space = SPACES[space_name]
    base = space.encode(space.base)
    out = []
    for filters, layers in LADDER:
        choices = dict(base)
        for i in range(space.n_stages):
            choices[f"s{i + 1}_filters"] = filters
            choices[f"s{i + 1}_layers"] = layers
        out.append((f"filters x{filters}, layers {layers:+d}", space.decode(choices)))
    return out


_DATA = None
_ARGS = None


def _init(args, data):
    global _DATA, _ARGS
    import torch
    torch.set_num_threads(args.threads)
    from nas.allocator import tune_allocator
    tune_allocator()
    _DATA, _ARGS = data, args


def _train(job):
    index, label, spec_json, seed = job
    from nas.train import train_and_evaluate
    args = _ARGS
    spec = Spec.from_json(spec_json)
    r = train_and_evaluate(spec, _DATA, epochs=args.epochs, resolution=args.resolution, batch_size=args.batch_size,
                           recipe=args.recipe, seed=seed)
    c = cost(spec)
    return {"index": index, "label": label, "seed": seed, "fingerprint": spec.fingerprint(),
            "flops": c.flops, "params": c.params, "accuracy": r.accuracy, "failed": r.failed,
            "reason": r.reason, "seconds": r.seconds,
            "history": [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"]} for h in r.history]}


def elasticity(flops, acc, rng: np.random.Generator, n_boot: int = 2000) -> dict:
    """Least-squares slope of ln acc on ln FLOPs, with a 90 % bootstrap interval over rungs."""
    x, y = np.log(np.asarray(flops, float)), np.log(np.asarray(acc, float))
    slope = float(np.polyfit(x, y, 1)[0])
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0:
            boots.append(np.polyfit(x[i], y[i], 1)[0])
    lo, hi = np.percentile(boots, [5, 95])
    return {"elasticity": slope, "ci90": [float(lo), float(hi)],
            "relative_gain_per_doubling": float(2 ** slope - 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--train-images", type=int, default=12000)
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--recipe", default="efficientnet")
    ap.add_argument("--seeds", type=int, default=1, help="training seeds per architecture")
    ap.add_argument("--target", type=float, default=400e6, help="FLOPs target T for the rewards (default 400M)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--output", default=str(ROOT / "results" / "search" / "capacity"))
    args = ap.parse_args(argv)

    from nas.data import load_dataset
    t_start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, seed=0).subset(args.train_images, args.val_images, seed=0)
    specs = ladder_specs()
    config = {k: getattr(args, k) for k in ("data", "train_images", "val_images", "resolution", "epochs",
                                            "batch_size", "recipe", "threads")}
    key = config_key(config)
    rows_path = out / "rows.jsonl"
    done = finished_rows(rows_path, key)
    flops = [cost(s).flops for _, s in specs]
    jobs = [(i, label, s.to_json(None), seed) for seed in range(args.seeds) for i, (label, s) in enumerate(specs)]
    jobs.sort(key=lambda j: -flops[j[0]])  # largest first, so the two workers finish together
    todo = [j for j in jobs if (j[0], j[3]) not in done]
    print(f"{len(specs)} architectures x {args.seeds} seed(s): {len(todo)} of {len(jobs)} trainings to do; "
          f"{data.summary()}, {args.resolution} px, {args.epochs} epoch(s)", file=sys.stderr)

    import multiprocessing as mp
    with open(rows_path, "a") as log, mp.get_context("fork").Pool(args.workers, _init, (args, data)) as pool:
        for row in pool.imap_unordered(_train, todo):
            row["config"] = key
            done[(row["index"], row["seed"])] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(f"[{len(done)}/{len(jobs)} {time.perf_counter() - t_start:5.0f}s] {row['label']}: "
                  f"{row['flops'] / 1e6:.0f}M FLOPs, accuracy by epoch "
                  f"{[round(h['val_accuracy'], 4) for h in row['history']]} ({row['seconds']:.0f}s)", file=sys.stderr)

    rng = np.random.default_rng(0)
    soft, hard = Reward.make(args.target, constraint="soft"), Reward.make(args.target, constraint="hard")
    per_epoch = []
    for e in range(args.epochs):
        rungs = []
        for i, (label, spec) in enumerate(specs):
            accs = [done[(i, s)]["history"][e]["val_accuracy"] for s in range(args.seeds)
                    if (i, s) in done and not done[(i, s)]["failed"] and len(done[(i, s)]["history"]) > e]
            if accs:
                a = float(np.mean(accs))
                rungs.append({"label": label, "flops": flops[i], "accuracy": a, "accuracies": accs,
                              "soft_reward": soft(a, flops[i]), "hard_reward": hard(a, flops[i])})
        if len(rungs) < 3:
            continue
        fit = elasticity([r["flops"] for r in rungs], [r["accuracy"] for r in rungs], rng)
        per_epoch.append({"epoch": e + 1, **fit,
                          "soft_pick": max(rungs, key=lambda r: r["soft_reward"])["label"],
                          "hard_pick": max(rungs, key=lambda r: r["hard_reward"])["label"],
                          "rungs": rungs})
    result = {
        "question": "accuracy elasticity d ln ACC / d ln FLOPs along a size ladder of the mnasnet-b0 space; "
                    "the soft reward (w = -0.07) lands on its target only where it equals 0.07",
        "command": "python scripts/capacity_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {**config, "seeds": args.seeds, "target": args.target},
        "per_epoch": per_epoch,
        "training_seconds": sum(r["seconds"] for r in done.values()),  # all rows, also those of earlier invocations
        "wall_seconds": time.perf_counter() - t_start,  # this invocation only (a resumed run reuses finished rows)
    }
    atomic_write_text(out / "capacity.json", json.dumps(result, indent=2) + "\n")
    if per_epoch:
        _plot(per_epoch, out / "capacity.png", args)
    for p in per_epoch:
        print(f"epoch {p['epoch']}: elasticity {p['elasticity']:+.4f} (90% CI {p['ci90'][0]:+.4f}..{p['ci90'][1]:+.4f}), "
              f"soft picks {p['soft_pick']}, hard picks {p['hard_pick']}")
    return 0


def _plot(per_epoch, path: Path, args) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in per_epoch:
        rungs = sorted(p["rungs"], key=lambda r: r["flops"])
        f = [r["flops"] / 1e6 for r in rungs]
        a = [r["accuracy"] for r in rungs]
        ax.plot(f, a, "o-", label=f"epoch {p['epoch']}: elasticity {p['elasticity']:+.3f}")
    last = per_epoch[-1]["rungs"]
    ref = next((r for r in last if r["label"] == "filters x1.0, layers +0"), last[len(last) // 2])
    xs = np.linspace(min(r["flops"] for r in last), max(r["flops"] for r in last), 50)
    ax.plot(xs / 1e6, ref["accuracy"] * (xs / ref["flops"]) ** 0.07, "k--",
            label="elasticity 0.07 through B0 (flat soft reward)")
    ax.axvline(args.target / 1e6, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs (M, at 224 px)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"{args.data}: {args.train_images} images, {args.resolution} px", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
