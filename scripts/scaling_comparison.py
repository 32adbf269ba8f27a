"""The EfficientNet paper's scaling comparison, small: width vs depth vs resolution vs compound.

From one base (default EfficientNet-B0 at 16 px), scale by a single dimension or
by the compound rule until the analytic FLOPs reach about 2x and 4x the base's,
train every variant with the same budget (nas.train.train_and_evaluate) and every
seed of ``--seeds``, and write a table and a plot of accuracy vs FLOPs.  At the
ground truth's budget (results/ground_truth/), two seeds, two workers::

    python scripts/scaling_comparison.py --data fashion-mnist --base-resolution 28 --epochs 3 \
        --limit-train 10000 --limit-val 10000 --batch-size 128 --seeds 0,1 --workers 2 \
        --output results/scaling/gt-budget

The images are drawn once (stratified, ``--data-seed``), as the ground truth draws
them, so a seed changes only the initialisation and the order of training.

Outputs (``--output``, default results/scaling): comparison.json (rows plus the
command), comparison.md, comparison.png.  Every finished run is appended to
comparison.runs.jsonl at once, so an interrupted comparison resumes where it stopped.

Matching: each method's multiplier is chosen on a fine grid (width and depth in
steps of 0.01, resolution in whole pixels, phi in steps of 0.01) to bring the
FLOPs ratio nearest the target; the achieved ratio is in the table, because
rounding (channels to multiples of 8, repeats by ceiling, feature maps by
'same' padding) makes exact matches impossible.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import numpy as np  # noqa: E402

from _rows import read_rows, run_pool  # noqa: E402
from nas.cost import cost  # noqa: E402
from nas.presets import load_spec  # noqa: E402
from nas.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from nas.spec import Spec  # noqa: E402
from scaling.compound import compound_scale, constraint_value, scale_spec  # noqa: E402


def _frange(lo: float, hi: float, step: float):
    n = int(round((hi - lo) / step))
    return [round(lo + i * step, 6) for i in range(n + 1)]


def _width(base: Spec, w: float) -> Spec:
    return scale_spec(base, width=w, name=f"width-x{w:g}", provenance={"scaling": {"method": "width", "width": w}})


def _depth(base: Spec, d: float) -> Spec:
    return scale_spec(base, depth=d, name=f"depth-x{d:g}", provenance={"scaling": {"method": "depth", "depth": d}})


def _resolution(base: Spec, r: int) -> Spec:
    return base.replace(resolution=int(r), name=f"resolution-{r}px",
                        provenance={"scaling": {"method": "resolution", "resolution": int(r)}})


def matched(base: Spec, method: str, target: float, abg) -> tuple[Spec, float]:
    """The variant of ``method`` whose FLOPs ratio to the base is nearest ``target`` (in log terms)."""
    f0 = cost(base).flops
    if method == "width":
        options = [(w, lambda w=w: _width(base, w)) for w in _frange(1.0, 4.0, 0.01)]
    elif method == "depth":
        options = [(d, lambda d=d: _depth(base, d)) for d in _frange(1.0, 16.0, 0.01)
                   if max(math.ceil(s.repeats * d) for s in base.stages) <= 64]
    elif method == "resolution":
        options = [(r, lambda r=r: _resolution(base, r)) for r in range(base.resolution, 8 * base.resolution + 1)]
    elif method == "compound":
        options = [(p, lambda p=p: compound_scale(base, p, *abg, name=f"compound-phi{p:g}"))
                   for p in _frange(0.0, 6.0, 0.01)]
    else:
        raise ValueError(method)
    best = None
    for m, make in options:
        s = make()
        err = abs(math.log(cost(s).flops / f0 / target))
        if best is None or err < best[0] - 1e-12:
            best = (err, m, s)
    return best[2], best[1]


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes whole numbers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"--seeds needs distinct non-negative seeds, got {text!r}")
    return seeds


def _data_seed(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"--data-seed takes one non-negative whole number, got {text!r}")
    return int(text)


_DATA = None


def _init(threads, data):
    global _DATA
    import torch

    from nas.allocator import tune_allocator

    torch.set_num_threads(threads)
    tune_allocator()
    _DATA = data


def _train(job):
    i, spec_json, seed, budget = job
    from nas.train import train_and_evaluate

    t0 = time.perf_counter()
    spec = Spec.from_json(spec_json)
    r = train_and_evaluate(spec, _DATA, epochs=budget["epochs"], batch_size=budget["batch_size"], seed=seed,
                           recipe=budget["recipe"])
    return {"fingerprint": spec.fingerprint(), "seed": seed, "budget": budget,
            "accuracy": r.accuracy, "failed": r.failed, "reason": r.reason,
            "seconds": round(time.perf_counter() - t0, 1)}


def _finished(path: Path, budget: dict) -> dict[tuple[str, int], dict]:
    """Finished runs of this budget by (fingerprint, seed); a torn last line is skipped."""
    return {(r["fingerprint"], r["seed"]): r for r in read_rows(path) if r.get("budget") == budget and "seed" in r}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="efficientnet-b0")
    ap.add_argument("--base-resolution", type=int, default=16)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--targets", default="2,4", help="FLOPs multiples of the base (default 2,4)")
    ap.add_argument("--methods", default="width,depth,resolution,compound")
    ap.add_argument("--coefficients", help="alpha,beta,gamma for the compound arm (default: nas-scale's, the paper's)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--limit-train", type=int, default=3000)
    ap.add_argument("--limit-val", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--recipe", default="adamw", help="training recipe (default adamw, as the search's estimator)")
    ap.add_argument("--seeds", type=_seeds, default=[0], help="training seeds, e.g. 0,1 (default 0)")
    ap.add_argument("--data-seed", type=_data_seed, default=0, help="the stratified draw of the images (default 0)")
    ap.add_argument("--workers", type=int, default=1, help="training processes (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    ap.add_argument("--output", default=str(ROOT / "results" / "scaling"))
    ap.add_argument("--dry-run", action="store_true", help="print the matched variants, train nothing")
    args = ap.parse_args(argv)

    if args.coefficients:
        abg = tuple(float(x) for x in args.coefficients.split(","))
        source = "--coefficients"
    else:
        from scaling.coefficients import default_coefficients

        abg, source = default_coefficients()
    base = load_spec(args.base).replace(resolution=args.base_resolution)
    f0 = cost(base).flops
    targets = [float(t) for t in args.targets.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    plan = [("base", 1.0, base, 1.0)]
    for t in targets:
        for m in methods:
            s, mult = matched(base, m, t, abg)
            plan.append((m, t, s, mult))
    for m, t, s, mult in plan:
        c = cost(s)
        print(f"{m:<10} target {t:g}x: multiplier {mult:g} -> {s.resolution} px, {s.n_layers} layers, "
              f"stem {s.stem.out_channels}, head {s.head.out_channels}, {c.flops / f0:.2f}x FLOPs, "
              f"{c.params:,} params", file=sys.stderr)
    if args.dry_run:
        return 0

    from nas.data import load_dataset
    from nas.train import RECIPES

    if args.recipe not in RECIPES:
        ap.error(f"--recipe must be one of {', '.join(RECIPES)}")
    data = load_dataset(args.data, seed=args.data_seed).subset(args.limit_train, args.limit_val, seed=args.data_seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "comparison.runs.jsonl"
    budget = {"data": args.data, "epochs": args.epochs, "limit_train": args.limit_train, "limit_val": args.limit_val,
              "batch_size": args.batch_size, "data_seed": args.data_seed, "recipe": args.recipe}
    done = _finished(cache_path, budget)
    # every seed of one variant side by side, the base first: a stop leaves whole variants
    jobs = [(i, s.to_json(None), seed, budget) for i, (_, _, s, _) in enumerate(plan) for seed in args.seeds]
    todo = [j for j in jobs if (plan[j[0]][2].fingerprint(), j[2]) not in done]
    print(f"{len(todo)} of {len(jobs)} trainings to do ({data.summary()})", file=sys.stderr, flush=True)
    if todo:
        with cache_path.open("a") as log:
            def on_row(job, rec):
                done[(rec["fingerprint"], rec["seed"])] = rec
                log.write(json.dumps(rec) + "\n")  # one line per finished run: resumable
                log.flush()
                m, t = plan[job[0]][:2]
                return f"{m} {t:g}x seed {rec['seed']}: accuracy {rec['accuracy']} ({rec['seconds']} s)"

            run_pool(todo, _train, workers=args.workers, initializer=_init, initargs=(args.threads, data),
                     on_row=on_row, total=len(jobs), already=len(jobs) - len(todo))

    rows = []
    for m, t, s, mult in plan:
        fp = s.fingerprint()
        c = cost(s)
        recs = [done[(fp, seed)] for seed in args.seeds]
        accs = {str(r["seed"]): (None if r["failed"] else r["accuracy"]) for r in recs}
        ok = [a for a in accs.values() if a is not None]
        rows.append({"method": m, "target": t, "multiplier": mult, "resolution": s.resolution, "layers": s.n_layers,
                     "stem": s.stem.out_channels, "head": s.head.out_channels, "params": c.params, "flops": c.flops,
                     "flops_ratio": round(c.flops / f0, 3), "accuracy": accs,
                     "mean_accuracy": float(np.mean(ok)) if ok else None,
                     "failed": {str(r["seed"]): r["reason"] for r in recs if r["failed"]},
                     "seconds": {str(r["seed"]): r["seconds"] for r in recs}, "spec": s.to_dict()})
    summary = _summary(rows, args.seeds)
    for r in rows[1:]:
        r["mean_minus_base"], r["mean_minus_base_se"] = versus_base(r, rows[0], args.seeds)

    command = "python scripts/scaling_comparison.py " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    doc = {"command": command, "base": args.base, "base_resolution": base.resolution, "base_flops": f0,
           "coefficients": {"alpha": abg[0], "beta": abg[1], "gamma": abg[2], "source": source,
                            "constraint": constraint_value(*abg)},
           "budget": budget, "seeds": args.seeds, "summary": summary, "rows": rows}
    atomic_write_text(out / "comparison.json", json.dumps(doc, indent=2) + "\n")
    seed_cols = " | ".join(f"seed {x}" for x in args.seeds)
    md = [f"# Scaling comparison from {args.base} at {base.resolution} px", "",
          f"`{command}`", "",
          f"Budget per run: {args.data}, {args.epochs:g} epoch(s) on {args.limit_train} training images, batch "
          f"{args.batch_size}, held-out {args.limit_val} images (both drawn once with seed {args.data_seed}), recipe "
          f"{args.recipe}, seeds {', '.join(map(str, args.seeds))}. "
          f"Compound arm: alpha={abg[0]:g}, beta={abg[1]:g}, gamma={abg[2]:g} ({source}).", "",
          f"| method | target | multiplier | res | layers | stem/head | params | MFLOPs | FLOPs x | {seed_cols} | mean "
          "| mean - base (± se) |",
          "|---|---|---|---|---|---|---|---|---|" + "---|" * (len(args.seeds) + 2)]
    for r in rows:
        cells = " | ".join("failed" if r["accuracy"][str(x)] is None else f"{r['accuracy'][str(x)]:.4f}"
                           for x in args.seeds)
        mean = "" if r["mean_accuracy"] is None else f"{r['mean_accuracy']:.4f}"
        d, se = r.get("mean_minus_base"), r.get("mean_minus_base_se")  # the base row has none
        vs = "" if d is None else f"{d:+.4f} (± {se:.4f})"
        md.append(f"| {r['method']} | {r['target']:g}x | {r['multiplier']:g} | {r['resolution']} | {r['layers']} | "
                  f"{r['stem']}/{r['head']} | {r['params']:,} | {r['flops'] / 1e6:.1f} | {r['flops_ratio']:.2f} | "
                  f"{cells} | {mean} | {vs} |")
    md += ["", "MFLOPs as `nas.cost` counts each spec at its resolution with its 1,000-class classifier."]
    if summary.get("seed_noise_sd") is not None:
        md += ["", f"Seed noise of one run: sd {summary['seed_noise_sd']:.4f} pooled over the {summary['pairs']} "
                   f"variants, median {summary['median_variant_sd']:.4f} (the deep variants spread most). "
                   "The standard error beside each difference comes from the two variants' own seed spreads; "
                   "a difference of more than 2 se stands out from the seeds."]
    atomic_write_text(out / "comparison.md", "\n".join(md) + "\n")
    png = _plot(rows, base.resolution, args.base)
    if png:
        atomic_write_bytes(out / "comparison.png", png)
    print(f"wrote {out / 'comparison.json'}, comparison.md, comparison.png", file=sys.stderr)
    return 0


def _summary(rows: list[dict], seeds: list[int]) -> dict:
    """The seed noise of one run, pooled over the variants and as its median, and what a difference of
    means must exceed when the noise is the pooled one."""
    if len(seeds) < 2:
        return {"seed_noise_sd": None}
    devs = []
    for r in rows:
        accs = [r["accuracy"][str(x)] for x in seeds]
        if all(a is not None for a in accs):
            devs.append(np.asarray(accs) - np.mean(accs))
    if not devs:
        return {"seed_noise_sd": None}
    k = len(seeds)
    sd = float(np.sqrt(sum(float(np.sum(d ** 2)) for d in devs) / (len(devs) * (k - 1))))
    median = float(np.median([np.sqrt(np.sum(d ** 2) / (k - 1)) for d in devs]))
    return {"seed_noise_sd": sd, "median_variant_sd": median, "pairs": len(devs),
            "difference_needed": 2 * sd * math.sqrt(2 / k)}


def versus_base(row: dict, base: dict, seeds: list[int]) -> tuple[float, float] | tuple[None, None]:
    """(mean of ``row`` - mean of ``base``, its standard error from the two variants' own seed spreads)."""
    a = [row["accuracy"][str(x)] for x in seeds]
    b = [base["accuracy"][str(x)] for x in seeds]
    if len(seeds) < 2 or any(v is None for v in a + b):
        return None, None
    k = len(seeds)
    se = math.sqrt(float(np.var(a, ddof=1)) / k + float(np.var(b, ddof=1)) / k)
    return float(np.mean(a) - np.mean(b)), se


def _plot(rows, res, name) -> bytes | None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in rows if r["method"] == "base")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    markers = {"width": "s", "depth": "^", "resolution": "D", "compound": "o"}
    for m, mk in markers.items():
        pts = sorted([base] + [r for r in rows if r["method"] == m and r["mean_accuracy"] is not None],
                     key=lambda r: r["flops"])
        if len(pts) > 1:
            line, = ax.plot([p["flops"] / 1e6 for p in pts], [p["mean_accuracy"] for p in pts], marker=mk,
                            label=f"{m} (mean of seeds)")
            for p in pts:  # every seed, faint
                accs = [a for a in p["accuracy"].values() if a is not None]
                ax.scatter([p["flops"] / 1e6] * len(accs), accs, marker=mk, s=12, alpha=0.35, color=line.get_color())
    ax.set_xlabel("MFLOPs")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"scaling {name} from {res} px: one dimension vs compound", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


if __name__ == "__main__":
    sys.exit(main())
