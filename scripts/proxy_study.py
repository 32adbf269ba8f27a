"""How far can the cheap accuracy estimates be trusted?  The committed correlation study.

Samples architectures around EfficientNet-B0 (MnasNet-style per-stage choices),
trains each briefly on Fashion-MNIST at a reduced resolution, scores each with
every training-free proxy and the params/FLOPs baselines, and reports the
Spearman rank correlation of every estimator with trained accuracy, plus each
estimator's cost per architecture.

    python scripts/proxy_study.py --n 40 --workers 2

writes ``results/evaluation/proxy_correlation.json`` and
``results/evaluation/proxy_correlation.png``.  Rows are appended to
``<output>/proxy_study_rows.jsonl`` as they finish, so an interrupted run resumes
where it stopped (rows of another configuration are ignored).

The sampler: per stage of B0, op in {MBConv e6, MBConv e3, depthwise-separable},
kernel in {3, 5}, SE in {0, 0.25}, skip in {identity, none}, width x{0.75, 1,
1.25} (reference rounding to multiples of 8), repeats B0 +-1 (at least 1); B0's
strides, stem and head.  Architecture 0 is B0 itself.  ``--space mnasnet``
draws uniformly from ``search_spaces.mnasnet.MnasNetSpace`` over B0's stages
instead (the full MnasNet space: also regular convs and pooling skips).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _rows import config_key, finished_rows  # noqa: E402
from nas.presets import load_preset  # noqa: E402
from nas.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from nas.spec import Spec  # noqa: E402
from scaling.compound import round_filters  # noqa: E402

PROXY_NAMES = ("synflow", "naswot", "grad_norm", "snip", "params", "flops")
OPS = (("mbconv", 6), ("mbconv", 3), ("dwconv", 1))


def sample_near_b0(rng: random.Random, base: Spec) -> Spec:
    stages = []
    for s in base.stages:
        op, expand = rng.choice(OPS)
        stages.append({**s.to_dict(), "op": op, "expand_ratio": expand, "kernel": rng.choice((3, 5)),
                       "se_ratio": rng.choice((0.0, 0.25)), "skip": rng.choice(("identity", "none")),
                       "out_channels": round_filters(s.out_channels, rng.choice((0.75, 1.0, 1.25))),
                       "repeats": max(1, s.repeats + rng.choice((-1, 0, 1)))})
    return base.replace(stages=stages, name="", provenance={"sampler": "near-b0"})


def sample_specs(n: int, seed: int, space: str) -> list[Spec]:
    base = load_preset("efficientnet-b0")
    rng = random.Random(seed)
    specs, seen = [base], {base.fingerprint()}
    if space == "mnasnet":
        from search_spaces import get_space
        ms = get_space("mnasnet-b0")  # the MnasNet space over B0's stages
        draw = lambda r: ms.decode(ms.sample(r))  # noqa: E731
    else:
        draw = lambda r: sample_near_b0(r, base)  # noqa: E731
    while len(specs) < n:
        spec = draw(rng)
        if spec.fingerprint() not in seen:
            seen.add(spec.fingerprint())
            specs.append(spec)
    return specs


# ---------------------------------------------------------------- statistics


def rankdata(a) -> np.ndarray:
    """Ranks 1..n with ties averaged (scipy.stats.rankdata's 'average')."""
    a = np.asarray(a, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    rx, ry = rankdata(x), rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


# ---------------------------------------------------------------- work


_DATA = None
_ARGS = None


def _init(args, data):
    global _DATA, _ARGS
    import torch
    torch.set_num_threads(args.threads)
    _DATA, _ARGS = data, args


def _evaluate(job):
    index, spec_json, seed, with_proxies = job
    from nas.proxies import score_proxies
    from nas.train import train_and_evaluate
    args, data = _ARGS, _DATA
    spec = Spec.from_json(spec_json)
    row = {"index": index, "seed": seed, "spec": spec.short(), "fingerprint": spec.fingerprint()}
    if with_proxies:
        res = score_proxies(PROXY_NAMES, spec, data, resolution=args.resolution, batch_size=args.proxy_batch,
                            seed=seed)
        row["proxies"] = {k: v.value for k, v in res.items()}
        row["proxy_seconds"] = {k: v.seconds for k, v in res.items()}
    r = train_and_evaluate(spec, data, epochs=args.epochs, resolution=args.resolution, batch_size=args.batch_size,
                           recipe=args.recipe, seed=seed)
    row.update(accuracy=r.accuracy, val_loss=r.loss, train_seconds=r.seconds, failed=r.failed, reason=r.reason,
               images_per_second=r.images_per_second)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="architectures (default 40)")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--train-images", type=int, default=6000)
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--resolution", type=int, default=24)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--proxy-batch", type=int, default=64)
    ap.add_argument("--recipe", default="efficientnet")
    ap.add_argument("--noise-repeats", type=int, default=6,
                    help="retrain this many architectures with another seed to measure seed noise")
    ap.add_argument("--space", default="near-b0", choices=("near-b0", "mnasnet"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    ap.add_argument("--output", default=str(ROOT / "results" / "evaluation"))
    args = ap.parse_args(argv)

    from nas.data import load_dataset
    t_start = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.data, seed=args.seed).subset(args.train_images, args.val_images, seed=args.seed)
    specs = sample_specs(args.n, args.seed, args.space)
    config = {k: getattr(args, k) for k in ("n", "data", "train_images", "val_images", "resolution", "epochs",
                                            "batch_size", "proxy_batch", "recipe", "space", "seed", "threads")}
    key = config_key(config)
    rows_path = out / "proxy_study_rows.jsonl"
    done = finished_rows(rows_path, key)
    jobs = [(i, s.to_json(None), args.seed, True) for i, s in enumerate(specs)]
    jobs += [(i, specs[i].to_json(None), args.seed + 1, False) for i in range(min(args.noise_repeats, len(specs)))]
    todo = [j for j in jobs if (j[0], j[2]) not in done]
    print(f"{len(specs)} architectures, {len(jobs)} trainings ({len(jobs) - len(todo)} already done), "
          f"{data.summary()}, {args.resolution} px, {args.epochs} epoch(s), {args.workers} worker(s)", file=sys.stderr)

    import multiprocessing as mp
    ctx = mp.get_context("fork")
    with open(rows_path, "a") as log, ctx.Pool(args.workers, initializer=_init, initargs=(args, data)) as pool:
        for row in pool.imap_unordered(_evaluate, todo):
            row["config"] = key
            done[(row["index"], row["seed"])] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            acc = row["accuracy"]
            print(f"[{len(done)}/{len(jobs)} {time.perf_counter() - t_start:6.0f}s] #{row['index']} seed {row['seed']} "
                  f"acc {acc if acc is None else round(acc, 4)} train {row['train_seconds']:.1f}s", file=sys.stderr)

    rows = [done[(i, args.seed)] for i in range(len(specs))]
    ok = [r for r in rows if not r["failed"] and r["accuracy"] is not None]
    acc = np.array([r["accuracy"] for r in ok])
    rho = {name: spearman([r["proxies"][name] for r in ok], acc) for name in PROXY_NAMES}
    secs = {name: float(np.mean([r["proxy_seconds"][name] for r in rows])) for name in PROXY_NAMES}
    secs["train"] = float(np.mean([r["train_seconds"] for r in rows]))
    repeats = [(done[(i, args.seed)], done[(i, args.seed + 1)]) for i in range(min(args.noise_repeats, len(specs)))]
    repeats = [(a, b) for a, b in repeats if a["accuracy"] is not None and b["accuracy"] is not None]
    noise = {
        "architectures": len(repeats),
        "mean_abs_accuracy_difference": float(np.mean([abs(a["accuracy"] - b["accuracy"]) for a, b in repeats]))
        if repeats else None,
        "accuracy_std_across_architectures": float(acc.std()) if len(acc) else None,
        "rows": [{"index": a["index"], "accuracy_seed0": a["accuracy"], "accuracy_seed1": b["accuracy"]}
                 for a, b in repeats],
    }
    result = {
        "n_architectures": len(rows),
        "n_failed": len(rows) - len(ok),
        "spearman": rho,
        "seconds_per_architecture": secs,
        "config": config,
        "command": "python scripts/proxy_study.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "wall_seconds": None,
        "seed_noise": noise,
        "rows": [{k: r[k] for k in ("index", "spec", "fingerprint", "accuracy", "val_loss", "failed", "reason",
                                    "train_seconds", "proxies", "proxy_seconds")} for r in rows],
    }
    result["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "proxy_correlation.json", json.dumps(result, indent=2) + "\n")
    _plot(ok, acc, rho, out / "proxy_correlation.png", config)
    print(json.dumps({"spearman": rho, "seconds_per_architecture": secs, "seed_noise": {
        k: v for k, v in noise.items() if k != "rows"}}, indent=2))
    return 0


def _plot(ok, acc, rho, path: Path, config) -> None:
    import io

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
    for ax, name in zip(axes.flat, PROXY_NAMES):
        x = [r["proxies"][name] for r in ok]
        ax.scatter(x, acc, s=14)
        if name in ("params", "flops"):
            ax.set_xscale("log")
        ax.set_title(f"{name}: Spearman rho = {rho[name]:+.2f}")
        ax.set_xlabel(name + (" (log)" if name in ("synflow",) else ""))
        ax.set_ylabel("held-out accuracy")
    fig.suptitle(f"{len(ok)} architectures near EfficientNet-B0: {config['data']}, {config['train_images']} "
                 f"train images, {config['resolution']} px, {config['epochs']:g} epoch(s), recipe {config['recipe']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(path, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
