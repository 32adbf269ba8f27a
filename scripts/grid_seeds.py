"""The scaling grid's candidates over several seeds: one table from the ``grid.json`` of each seed.

    python scripts/grid_seeds.py results/scaling/gt-budget/seed0 results/scaling/gt-budget/seed1 \\
        results/scaling/gt-budget/seed2 --output results/scaling/gt-budget/grid_seeds.md

Every folder must hold a grid search of the same base, grid and budget but its ``seed`` (``nas-scale
--grid-search --seed S``, the same ``--data-seed``); the table gives each trained candidate's accuracy
per seed, its mean and sample sd, and names the candidate with the best mean (the one a single seed's
``best`` may miss).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nas.atomic import atomic_write_text  # noqa: E402


def combine(docs: list[dict]) -> tuple[list[dict], list[int]]:
    """Rows (alpha, beta, gamma, resolution, depth, flops, accuracies by seed, mean, sd), best mean first."""
    seeds = [d["budget"]["seed"] for d in docs]
    same = [{k: v for k, v in d["budget"].items() if k != "seed"} for d in docs]
    if any(s != same[0] for s in same) or len(set(seeds)) != len(seeds):
        raise ValueError("the grids differ in more than their seed (or repeat a seed)")
    if len({(d["base_fingerprint"], d["step"], d["max_coef"], d["tolerance"]) for d in docs}) != 1:
        raise ValueError("the grids differ in base or grid")
    rows = []
    for i, c in enumerate(docs[0]["candidates"]):
        accs = [d["candidates"][i]["accuracy"] for d in docs]
        if "duplicate_of" in c or any(a is None for a in accs):
            continue
        rows.append({"alpha": c["alpha"], "beta": c["beta"], "gamma": c["gamma"], "resolution": c["resolution"],
                     "depth": c["depth"], "flops": c["flops"], "accuracy": dict(zip(map(str, seeds), accs)),
                     "mean": statistics.mean(accs), "sd": statistics.stdev(accs) if len(accs) > 1 else None})
    rows.sort(key=lambda r: -r["mean"])
    return rows, seeds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=Path, help="grid-search output folders, one per seed")
    ap.add_argument("--output", type=Path, help="write the table here (Markdown) as well as to stdout")
    args = ap.parse_args(argv)
    try:
        docs = [json.loads((f / "grid.json").read_text()) for f in args.folders]
        rows, seeds = combine(docs)
    except (OSError, ValueError, KeyError) as e:
        print(f"grid_seeds.py: error: {e}", file=sys.stderr)
        return 2
    cmd = "python scripts/grid_seeds.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"`{cmd}`", "",
             "| α (depth) | β (width) | γ (resolution) | px | layers | MFLOPs | "
             + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd |",
             "|---|---|---|---|---|---|" + "---|" * (len(seeds) + 2)]
    for r in rows:
        sd = "" if r["sd"] is None else f"{r['sd']:.4f}"
        mean = f"**{r['mean']:.4f}**" if r is rows[0] else f"{r['mean']:.4f}"
        accs = " | ".join(f"{r['accuracy'][str(s)]:.4f}" for s in seeds)
        lines.append(f"| {r['alpha']:g} | {r['beta']:g} | {r['gamma']:g} | {r['resolution']} | {r['depth']} | "
                     f"{r['flops'] / 1e6:.1f} | {accs} | {mean} | {sd} |")
    b = rows[0]
    lines += ["", f"Best mean over {len(seeds)} seeds: α {b['alpha']:g}, β {b['beta']:g}, γ {b['gamma']:g} "
                  f"({b['mean']:.4f})."]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.output:
        atomic_write_text(args.output, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
