"""The EfficientNet paper's scaling comparison, small: width vs depth vs resolution vs compound.

From one base (default EfficientNet-B0 at 16 px), scale by a single dimension or
by the compound rule until the analytic FLOPs reach about 2x and 4x the base's,
train every variant with the same budget (nas.train.train_and_evaluate), and
write a table and a plot of accuracy vs FLOPs::

    python scripts/scaling_comparison.py --data fashion-mnist --base-resolution 16 \\
        --epochs 1 --limit-train 3000 --limit-val 1000 --batch-size 32 --threads 1

Outputs (``--output``, default results/scaling): comparison.json (rows plus the
command), comparison.md, comparison.png.  Finished runs are cached in
comparison.runs.jsonl, so an interrupted comparison resumes where it stopped.

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="efficientnet-b0")
    ap.add_argument("--base-resolution", type=int, default=16)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--targets", default="2,4", help="FLOPs multiples of the base (default 2,4)")
    ap.add_argument("--methods", default="width,depth,resolution,compound")
    ap.add_argument("--coefficients", help="alpha,beta,gamma for the compound arm "
                                           "(default: results/scaling/grid.json best, else the paper's)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--limit-train", type=int, default=3000)
    ap.add_argument("--limit-val", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--output", default=str(ROOT / "results" / "scaling"))
    ap.add_argument("--dry-run", action="store_true", help="print the matched variants, train nothing")
    args = ap.parse_args(argv)

    if args.coefficients:
        abg = tuple(float(x) for x in args.coefficients.split(","))
        source = "--coefficients"
    else:
        sys.path.insert(0, str(ROOT))
        from nas.cli.scale import default_coefficients

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

    import torch

    from nas.data import load_dataset
    from nas.train import train_and_evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.data, seed=args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "comparison.runs.jsonl"
    budget = {"data": args.data, "epochs": args.epochs, "limit_train": args.limit_train, "limit_val": args.limit_val,
              "batch_size": args.batch_size, "seed": args.seed, "recipe": "efficientnet"}
    cache = {}
    if cache_path.exists():
        for line in cache_path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("budget") == budget:
                    cache[r["fingerprint"]] = r
    rows = []
    for i, (m, t, s, mult) in enumerate(plan):
        fp = s.fingerprint()
        c = cost(s)
        if fp not in cache:
            t0 = time.perf_counter()
            r = train_and_evaluate(s, data, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                   limit_train=args.limit_train, limit_val=args.limit_val)
            rec = {"fingerprint": fp, "budget": budget, "accuracy": r.accuracy, "failed": r.failed,
                   "reason": r.reason, "seconds": round(time.perf_counter() - t0, 1)}
            with cache_path.open("a") as f:  # one line per finished run: resumable
                f.write(json.dumps(rec) + "\n")
            cache[fp] = rec
        rec = cache[fp]
        rows.append({"method": m, "target": t, "multiplier": mult, "resolution": s.resolution, "layers": s.n_layers,
                     "stem": s.stem.out_channels, "head": s.head.out_channels, "params": c.params, "flops": c.flops,
                     "flops_ratio": round(c.flops / f0, 3), "accuracy": rec["accuracy"], "failed": rec["failed"],
                     "reason": rec["reason"], "seconds": rec["seconds"], "spec": s.to_dict()})
        print(f"[{i + 1}/{len(plan)}] {m} {t:g}x: accuracy {rec['accuracy']} ({rec['seconds']} s)", file=sys.stderr)

    command = "python scripts/scaling_comparison.py " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    doc = {"command": command, "base": args.base, "base_resolution": base.resolution, "base_flops": f0,
           "coefficients": {"alpha": abg[0], "beta": abg[1], "gamma": abg[2], "source": source,
                            "constraint": constraint_value(*abg)},
           "budget": budget, "rows": rows}
    atomic_write_text(out / "comparison.json", json.dumps(doc, indent=2) + "\n")
    md = [f"# Scaling comparison from {args.base} at {base.resolution} px", "",
          f"`{command}`", "",
          f"Budget per run: {args.data}, {args.epochs:g} epoch(s) on {args.limit_train} training images, batch "
          f"{args.batch_size}, held-out {args.limit_val} images, seed {args.seed}, recipe efficientnet. "
          f"Compound arm: alpha={abg[0]:g}, beta={abg[1]:g}, gamma={abg[2]:g} ({source}).", "",
          "| method | target | multiplier | res | layers | stem/head | params | FLOPs | FLOPs x | accuracy |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else f"failed: {r['reason']}"
        md.append(f"| {r['method']} | {r['target']:g}x | {r['multiplier']:g} | {r['resolution']} | {r['layers']} | "
                  f"{r['stem']}/{r['head']} | {r['params']:,} | {r['flops']:,} | {r['flops_ratio']:.2f} | {acc} |")
    atomic_write_text(out / "comparison.md", "\n".join(md) + "\n")
    png = _plot(rows, base.resolution, args.base)
    if png:
        atomic_write_bytes(out / "comparison.png", png)
    print(f"wrote {out / 'comparison.json'}, comparison.md, comparison.png", file=sys.stderr)
    return 0


def _plot(rows, res, name) -> bytes | None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(r for r in rows if r["method"] == "base")
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    markers = {"width": "s", "depth": "^", "resolution": "D", "compound": "o"}
    for m, mk in markers.items():
        pts = sorted([base] + [r for r in rows if r["method"] == m and r["accuracy"] is not None],
                     key=lambda r: r["flops"])
        if len(pts) > 1:
            ax.plot([p["flops"] / 1e6 for p in pts], [p["accuracy"] for p in pts], marker=mk, label=m)
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
