"""The ground truth: architectures of the ``mnasnet-b0`` space trained from scratch with one fixed budget.

Every estimator of the toolkit (short trainings, training-free proxies, the supernet)
is judged by how well it ranks these architectures (``scripts/trust.py``).

    python scripts/ground_truth.py sweep      # once: the recipe sweep on EfficientNet-B0 at the reference budget
    python scripts/ground_truth.py table      # the reference table (hours; resumes; run it as often as it takes)
    python scripts/ground_truth.py report     # rewrite table.json / table.png from the rows, no training
    python scripts/ground_truth.py repeat --first 2   # retrain the first rows here: how far the machine moves them

The budget (``REFERENCE``): 10,000 stratified images of the Fashion-MNIST train split
(from disk), 3 epochs at 28 px, batch 128, the ``adamw`` recipe at 0.012 per 256 images
without augmentation (the sweep: random crop and flip cost B0 0.045-0.09 at 8 epochs);
accuracy on the whole official test split (10,000 images).  Why 3 epochs and not 8: with
8 epochs every member converged to 0.85-0.89 and the seeds agreed with Spearman rho 0.39
only; the same 16 architectures trained for 3 epochs agree with rho 0.80 (the 8-epoch rows
stay in ``rows.jsonl``; ``--epochs 8 --val-images 5000 --output DIR`` rebuilds their table).  Two worker
processes, one thread each.  Every finished training is appended to ``rows.jsonl``
at once (a stop loses at most the trainings in flight); a rerun skips finished ones.
``table.json`` is ``{"settings": ..., "status": ..., "summary": ..., "rows": [{"spec",
"flops", "params", "accuracy": {"0": ..., "1": ...}, "seconds", ...}]}``.

The architectures (``reference_architectures``): EfficientNet-B0, the member closest
to MobileNetV2, then members drawn from a seeded pool of uniform samples, stratified
over log-FLOPs (150M to 900M at 224 px, equal-width bins) and, inside each bin,
chosen greedily to even out how often every (stage, choice, value) occurs.  The first
``--two-seed`` architectures are trained with seeds 0 and 1 (they run first, so the
seed-to-seed Spearman rho is known early).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _rows import (GROUND_TRUTH_FORMAT, GROUND_TRUTH_VERSION, config_key, finished_rows, read_ground_truth,  # noqa: E402
                   run_pool, spearman)
from nas.cost import cost  # noqa: E402
from nas.presets import load_preset  # noqa: E402
from nas.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from nas.document import write_json  # noqa: E402
from nas.spec import Spec  # noqa: E402
from search_spaces import SPACES  # noqa: E402
from search_spaces.mnasnet import CHOICES  # noqa: E402

OUT = ROOT / "results" / "ground_truth"

# The reference budget (chosen with the sweep in results/ground_truth/recipe_sweep.json).
REFERENCE = {
    "data": "fashion-mnist", "train_images": 10000, "val_images": 10000, "resolution": 28, "epochs": 3,
    "batch_size": 128, "recipe": "adamw", "lr": 0.012, "augment": False, "threads": 1, "space": "mnasnet-b0",
}

# The sweep: peak rate per 256 images (adamw) with augmentation, and the middle rate without it.
SWEEP = [{"lr": 0.006, "augment": True}, {"lr": 0.012, "augment": True}, {"lr": 0.024, "augment": True},
         {"lr": 0.012, "augment": False}]


# ------------------------------------------------------------------ the architectures

def closest_to_mobilenet_v2(space) -> dict:
    """The member whose every stage is nearest MobileNetV2's (op, kernel, SE, skip, width, depth)."""
    mb = load_preset("mobilenet-v2")
    base = space.base
    if len(mb.stages) != len(base.stages):
        raise SystemExit("mobilenet-v2 and the space's skeleton differ in stage count")
    ops = {("dwconv", 1): "dwconv", ("mbconv", 3): "mbconv3", ("mbconv", 6): "mbconv6", ("conv", 1): "conv"}
    from nas.spec import round_filters
    choices = {}
    for i, (m, b) in enumerate(zip(mb.stages, base.stages)):
        p = f"s{i + 1}_"
        choices[p + "op"] = ops.get((m.op, int(m.expand_ratio)), "mbconv6")
        choices[p + "kernel"] = min(CHOICES["kernel"], key=lambda k: abs(k - m.kernel))
        choices[p + "se"] = min(CHOICES["se"], key=lambda s: abs(s - m.se_ratio))
        choices[p + "skip"] = m.skip if m.skip in CHOICES["skip"] else "identity"
        choices[p + "filters"] = min(CHOICES["filters"],
                                     key=lambda f: (abs(round_filters(b.out_channels, f) - m.out_channels), abs(f - 1)))
        choices[p + "layers"] = min(CHOICES["layers"],
                                    key=lambda d: (abs(max(1, b.repeats + d) - m.repeats), abs(d)))
    return choices


def reference_architectures(n: int = 52, seed: int = 0, space_name: str = "mnasnet-b0",
                            lo: float = 150e6, hi: float = 900e6, bins: int = 10) -> list[tuple[str, Spec]]:
    """``n`` (label, spec) pairs: B0, the MobileNetV2-like member, then FLOPs- and choice-stratified samples."""
    space = SPACES[space_name]
    out = [("efficientnet-b0", space.decode(space.encode(space.base))),
           ("closest to mobilenet-v2", space.decode(closest_to_mobilenet_v2(space)))]
    rng = random.Random(seed)
    pool: list[tuple[float, dict]] = []
    seen = {s.fingerprint() for _, s in out}
    while len(pool) < 6000:
        c = space.sample(rng)
        s = space.decode(c)
        f = cost(s).flops
        if lo <= f <= hi and s.fingerprint() not in seen:
            seen.add(s.fingerprint())
            pool.append((f, c))
    edges = np.linspace(math.log(lo), math.log(hi), bins + 1)
    by_bin: list[list[dict]] = [[] for _ in range(bins)]
    for f, c in pool:
        by_bin[min(bins - 1, int(np.searchsorted(edges, math.log(f), side="right")) - 1)].append(c)
    counts: Counter = Counter()
    for _, s in out:
        counts.update(space.encode(s).items())
    picked: list[dict] = []
    b = 0
    while len(out) + len(picked) < n:  # round robin over the bins, greedy on the rarest (parameter, value) pairs
        cands = by_bin[b % bins]
        b += 1
        if not cands:
            continue
        best = min(range(len(cands)), key=lambda i: sum(counts[kv] for kv in cands[i].items()))
        c = cands.pop(best)
        counts.update(c.items())
        picked.append(c)
    for i, c in enumerate(picked):
        out.append((f"sample {i + 1}", space.decode(c)))
    return out


# ------------------------------------------------------------------ workers

_DATA = None
_THREADS = 1


def _init(threads, data):
    global _DATA, _THREADS
    import torch
    torch.set_num_threads(threads)
    from nas.allocator import tune_allocator
    tune_allocator()
    _DATA, _THREADS = data, threads


def _train(job):
    index, label, spec_json, seed, settings = job
    from nas.train import train_and_evaluate
    spec = Spec.from_json(spec_json)
    r = train_and_evaluate(spec, _DATA, epochs=settings["epochs"], resolution=settings["resolution"],
                           batch_size=settings["batch_size"], recipe=settings["recipe"], lr=settings["lr"],
                           augment=settings["augment"], seed=seed)
    c = cost(spec)
    return {"index": index, "label": label, "seed": seed, "fingerprint": spec.fingerprint(),
            "flops": c.flops, "params": c.params, "accuracy": r.accuracy, "failed": r.failed,
            "reason": r.reason, "seconds": r.seconds, "images_per_second": r.images_per_second,
            "history": [{"epoch": h["epoch"], "val_accuracy": h["val_accuracy"], "train_loss": h["train_loss"]}
                        for h in r.history]}


def _run(jobs, rows_path: Path, done: dict, data, workers: int, threads: int, total: int) -> None:
    """Train the jobs not in ``done`` (by (index, seed)); each row is tagged with its job's settings key."""
    todo = [j for j in jobs if (j[0], j[3]) not in done]
    print(f"{len(todo)} of {total} trainings to do ({data.summary()})", file=sys.stderr, flush=True)
    if not todo:
        return
    with open(rows_path, "a") as log:
        def on_row(job, row):
            row["config"] = config_key(job[4])
            done[(row["index"], row["seed"])] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            acc = "failed" if row["failed"] else f"{row['accuracy']:.4f}"
            return (f"#{row['index']} {row['label']} seed {row['seed']}: {row['flops'] / 1e6:.0f}M FLOPs, "
                    f"accuracy {acc} ({row['seconds']:.0f} s)")

        # in order: the two-seed architectures finish first
        run_pool(todo, _train, workers=workers, initializer=_init, initargs=(threads, data), on_row=on_row,
                 total=total, already=total - len(todo))


def _load_data(settings):
    from nas.data import load_dataset
    return load_dataset(settings["data"], seed=0).subset(settings["train_images"], settings["val_images"], seed=0)


# ------------------------------------------------------------------ statistics

def bootstrap_interval(fn, n_items: int, rng: np.random.Generator, n_boot: int = 2000) -> list[float]:
    vals = []
    for _ in range(n_boot):
        i = rng.integers(0, n_items, n_items)
        v = fn(i)
        if v is not None and math.isfinite(v):
            vals.append(v)
    lo, hi = np.percentile(vals, [5, 95])
    return [float(lo), float(hi)]


def summarize(rows: list[dict]) -> dict:
    rng = np.random.default_rng(0)
    ok = [r for r in rows if r["accuracy"].get("0") is not None]
    out: dict = {"n_architectures": len(ok)}
    two = [r for r in ok if r["accuracy"].get("1") is not None]
    out["n_two_seeds"] = len(two)
    if len(two) >= 4:
        a0 = np.array([r["accuracy"]["0"] for r in two])
        a1 = np.array([r["accuracy"]["1"] for r in two])
        out["spearman_seed0_seed1"] = spearman(a0, a1)
        out["spearman_seed0_seed1_ci90"] = bootstrap_interval(
            lambda i: spearman(a0[i], a1[i]) if len(set(i)) > 2 else None, len(two), rng)
        out["seed_noise_sd"] = float(np.std(a0 - a1, ddof=1) / math.sqrt(2))
        out["spread_sd"] = float(np.std((a0 + a1) / 2, ddof=1))
    b0 = next((r for r in ok if r["label"] == "efficientnet-b0"), None)
    if b0:
        out["efficientnet_b0_accuracy"] = b0["accuracy"]
    if len(ok) >= 4:
        f = np.log([r["flops"] for r in ok])
        acc = np.log([r["accuracy"]["0"] for r in ok])
        out["elasticity"] = float(np.polyfit(f, acc, 1)[0])
        out["elasticity_ci90"] = bootstrap_interval(
            lambda i: float(np.polyfit(f[i], acc[i], 1)[0]) if np.ptp(f[i]) > 0 else None, len(ok), rng)
        out["spearman_accuracy_flops"] = spearman([r["flops"] for r in ok], [r["accuracy"]["0"] for r in ok])
        out["spearman_accuracy_params"] = spearman([r["params"] for r in ok], [r["accuracy"]["0"] for r in ok])
    return out


# ------------------------------------------------------------------ phases

def _overrides(args) -> dict:
    """The budget overrides given on the command line (``--epochs``, ``--val-images``), as settings."""
    given = {"epochs": args.epochs, "val_images": args.val_images}
    return {k: v for k, v in given.items() if v is not None}


def _override_flags(args) -> str:
    """The same overrides as command-line flags, for the ``command`` a result records."""
    return "".join(f" --{k.replace('_', '-')} {v}" for k, v in _overrides(args).items())


def table(args, report_only: bool = False) -> int:
    settings = {**REFERENCE, **_overrides(args)}
    key = config_key(settings)
    rows_path = OUT / "rows.jsonl"
    done = finished_rows(rows_path, key)
    archs = reference_architectures(args.n)
    jobs = []
    for i, (label, s) in enumerate(archs[:args.two_seed]):  # seed 0 and 1 side by side on the two workers
        jobs += [(i, label, s.to_json(None), 0, settings), (i, label, s.to_json(None), 1, settings)]
    jobs += [(i, label, s.to_json(None), 0, settings) for i, (label, s) in enumerate(archs) if i >= args.two_seed]
    if not report_only:
        _run(jobs, rows_path, done, _load_data(settings), args.workers, settings["threads"], len(jobs))
    rows = []
    for i, (label, s) in enumerate(archs):
        got = {seed: done[(i, seed)] for seed in (0, 1) if (i, seed) in done}
        if not got:
            continue
        c = cost(s)
        rows.append({"index": i, "label": label, "spec": s.to_dict(), "flops": c.flops, "params": c.params,
                     "accuracy": {str(seed): (r["accuracy"] if not r["failed"] else None) for seed, r in got.items()},
                     "seconds": {str(seed): r["seconds"] for seed, r in got.items()},
                     "history": {str(seed): [h["val_accuracy"] for h in r["history"]] for seed, r in got.items()}})
    n_done = sum(1 for j in jobs if (j[0], j[3]) in done)
    doc = {"format": GROUND_TRUTH_FORMAT, "version": GROUND_TRUTH_VERSION,
           "status": "complete" if n_done == len(jobs) else f"in progress: {n_done} of {len(jobs)} trainings",
           "command": "python scripts/ground_truth.py table" + _override_flags(args),
           "settings": {**settings, "val_split": "fixed stratified part of the official test split (t10k), seed 0",
                        "train_split": "fixed stratified part of the train split, seed 0",
                        "n_architectures": len(archs), "two_seed_architectures": args.two_seed,
                        "workers": args.workers},
           "summary": summarize(rows), "rows": rows}
    out = args.output or OUT
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "table.json", doc, indent=1)
    if rows:
        _plot(rows, doc, out / "table.png")
    print(json.dumps({"status": doc["status"], **doc["summary"]}, indent=1))
    return 0


def _machine() -> dict:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "torch": torch.__version__}


def repeat(args) -> int:
    """Retrain the table's first ``--first`` architectures with every seed the table holds, on this machine,
    and set each figure beside the table's: how far another machine (its CPU kernels) moves one training."""
    settings = {**REFERENCE, **_overrides(args)}
    done = finished_rows(OUT / "rows.jsonl", config_key(settings))
    archs = reference_architectures(args.n)[:args.first]
    jobs = [(i, label, s.to_json(None), seed, settings) for i, (label, s) in enumerate(archs) for seed in (0, 1)
            if (i, seed) in done]
    if not jobs:
        print("nothing to repeat: the table holds none of these trainings", file=sys.stderr)
        return 1
    rows = []

    def on_row(job, row):
        old = done[(row["index"], row["seed"])]
        rows.append({"index": row["index"], "label": row["label"], "seed": row["seed"], "table": old["accuracy"],
                     "here": row["accuracy"], "difference": round(row["accuracy"] - old["accuracy"], 4),
                     "seconds": round(row["seconds"], 1), "history": [h["val_accuracy"] for h in row["history"]]})
        return f"#{row['index']} {row['label']} seed {row['seed']}: table {old['accuracy']:.4f}, here {row['accuracy']:.4f}"

    run_pool(jobs, _train, workers=args.workers, initializer=_init, initargs=(settings["threads"], _load_data(settings)),
             on_row=on_row, total=len(jobs))
    diffs = np.abs([r["difference"] for r in rows])
    table_doc = read_ground_truth(OUT / "table.json")
    doc = {"command": f"python scripts/ground_truth.py repeat --first {args.first}" + _override_flags(args),
           "machine": _machine(), "settings": settings, "rows": rows,
           "summary": {"mean_abs_difference": round(float(diffs.mean()), 4),
                       "max_abs_difference": round(float(diffs.max()), 4),
                       "table_seed_noise_sd": table_doc["summary"].get("seed_noise_sd")}}
    atomic_write_text(OUT / "repeat.json", json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["summary"]))
    return 0


def sweep(args) -> int:
    base = {**REFERENCE, **_overrides(args)}
    points = [{"lr": lr, "augment": False} for lr in args.lr] if args.lr else SWEEP
    rows_path = OUT / "sweep.jsonl"
    spec = SPACES[base["space"]].base
    jobs, done = [], {}
    for k, change in enumerate(points):  # one pool for all points: both workers busy
        settings = {**base, **change}
        got = finished_rows(rows_path, config_key(settings))
        for seed in range(args.seeds):
            jobs.append((k, "efficientnet-b0", spec.to_json(None), seed, settings))
            if (k, seed) in got:
                done[(k, seed)] = got[(k, seed)]
    _run(jobs, rows_path, done, _load_data(base), args.workers, base["threads"], len(jobs))
    results = []
    for k, change in enumerate(points):
        got = [done[(k, s)] for s in range(args.seeds) if (k, s) in done]
        results.append({**change, "accuracy_by_seed": [r["accuracy"] for r in got],
                        "history_by_seed": [[h["val_accuracy"] for h in r["history"]] for r in got],
                        "seconds": [r["seconds"] for r in got]})
    command = ("python scripts/ground_truth.py sweep" + (f" --seeds {args.seeds}" if args.seeds != 1 else "")
               + _override_flags(args) + (" --lr " + " ".join(map(str, args.lr)) if args.lr else ""))
    doc = {"command": command, "network": "efficientnet-b0",
           "settings": {k: v for k, v in base.items() if k not in ("lr", "augment")}, "points": results}
    out = args.output or OUT
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe_sweep.json", json.dumps(doc, indent=1) + "\n")
    for r in results:
        print(f"lr {r['lr']} augment {r['augment']}: {r['accuracy_by_seed']}")
    return 0


def _plot(rows, doc, path: Path) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    f = [r["flops"] / 1e6 for r in rows]
    a0 = [r["accuracy"]["0"] for r in rows]
    ax.scatter(f, a0, s=18, label="seed 0")
    two = [r for r in rows if "1" in r["accuracy"] and r["accuracy"]["1"] is not None]
    if two:
        ax.scatter([r["flops"] / 1e6 for r in two], [r["accuracy"]["1"] for r in two], s=18, marker="x",
                   label="seed 1")
    for r in rows:
        if r["label"] in ("efficientnet-b0", "closest to mobilenet-v2"):
            ax.annotate(r["label"], (r["flops"] / 1e6, r["accuracy"]["0"]), fontsize=7)
    s = doc["summary"]
    title = f"{doc['status']}; rho(seed0, seed1) = {s.get('spearman_seed0_seed1', float('nan')):.2f}"
    ax.set_title(title, fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs (M, at 224 px)")
    ax.set_ylabel(f"Fashion-MNIST test accuracy ({doc['settings']['resolution']} px, "
                  f"{doc['settings']['epochs']} epochs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("phase", choices=("sweep", "table", "report", "repeat"),
                    help="repeat: retrain the table's first --first architectures here, beside the table's figures")
    ap.add_argument("--first", type=int, default=1, help="repeat: how many of the table's architectures (default 1)")
    ap.add_argument("--n", type=int, default=52, help="architectures in the table (default 52)")
    ap.add_argument("--two-seed", type=int, default=16, help="architectures trained with two seeds (default 16)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds per sweep point (default 1)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None, help="override the reference budget's epochs (a study)")
    ap.add_argument("--val-images", type=int, default=None,
                    help="override the reference's held-out images (10000: the whole official test split)")
    ap.add_argument("--lr", type=float, nargs="+", help="sweep: these peak rates (per 256 images), no augmentation")
    ap.add_argument("--output", type=Path, default=None,
                    help="write table.json/table.png here instead of results/ground_truth (rows are shared)")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.phase == "sweep":
        return sweep(args)
    if args.phase == "repeat":
        return repeat(args)
    return table(args, report_only=args.phase == "report")


if __name__ == "__main__":
    sys.exit(main())
