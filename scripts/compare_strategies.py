"""Compare the search strategies at equal budgets over several seeds (results/search/strategies.*).

    python scripts/compare_strategies.py --budget 50 --seeds 0 1 2 --out results/search

Every (strategy, seed) is one ``nas.search.run_search`` with the default estimator
(proxy:synflow at 32 px on the embedded sample), the soft reward at 400M FLOPs,
and in-memory storage.  One estimator object is shared by all runs with a cache
per spec fingerprint: the proxy is deterministic (seeded batch and init), so a
cached score is exactly what a re-evaluation would give, and the comparison
only saves time.  Writes strategies.json (trajectories: best reward after each
complete trial), strategies.md (table) and strategies.png (mean best reward vs trials).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402


class CachedEstimator:
    def __init__(self, inner):
        self.inner, self.kind, self.cache, self.hits = inner, inner.kind, {}, 0
        self.name = inner.name

    def __call__(self, spec, report=None):
        fp = spec.fingerprint()
        if fp in self.cache:
            self.hits += 1
            return self.cache[fp]
        e = self.inner(spec, report)
        self.cache[fp] = e
        return e

    def describe(self):
        return self.inner.describe()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=["tpe", "random", "evolution", "rl", "nsga2"])
    ap.add_argument("--target", type=float, default=400e6)
    ap.add_argument("--out", default="results/search")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from nas.data import load_dataset
    from nas.estimators import DEFAULT_ESTIMATOR, make_estimator
    from nas.search import SearchConfig, StorageConfig, run_search

    est = CachedEstimator(make_estimator(DEFAULT_ESTIMATOR, load_dataset("sample")))
    runs = []
    t_all = time.perf_counter()
    for strategy in args.strategies:
        for seed in args.seeds:
            cfg = SearchConfig(target=args.target, strategy=strategy, budget=args.budget, seed=seed,
                               storage=StorageConfig(url=":memory:", study_name=f"{strategy}-s{seed}"))
            t0 = time.perf_counter()
            res = run_search(cfg, estimator=est)
            best, traj = None, []
            for r in res.rows:
                if r["state"] == "COMPLETE" and r["reward"] is not None:
                    best = r if best is None or r["reward"] > best["reward"] else best
                    traj.append(best["reward"])
            runs.append({"strategy": strategy, "seed": seed, "trajectory": traj, "best_reward": best["reward"],
                         "best_flops": best["flops"], "best_accuracy": best["accuracy"],
                         "b0_reward": res.reference["efficientnet-b0"]["reward"], "n_failed": res.n_failed,
                         "seconds": round(time.perf_counter() - t0, 2)})
            print(f"{strategy:>9} seed {seed}: best reward {best['reward']:.4f} at {best['flops'] / 1e6:.0f}M FLOPs "
                  f"({runs[-1]['seconds']:.0f} s)", file=sys.stderr)
    total = time.perf_counter() - t_all

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = [c for c in (10, 25, 50, 100, 200) if c <= args.budget] + ([args.budget] if args.budget not in (10, 25, 50, 100, 200) else [])
    table = []
    for strategy in args.strategies:
        rs = [r for r in runs if r["strategy"] == strategy]
        row = {"strategy": strategy}
        for c in checkpoints:
            vals = [r["trajectory"][min(c, len(r["trajectory"])) - 1] for r in rs]
            row[f"at_{c}"] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        row["best_flops_M"] = [round(r["best_flops"] / 1e6, 1) for r in rs]
        row["within_10pct"] = sum(abs(r["best_flops"] / args.target - 1) <= 0.1 for r in rs)
        row["beats_b0"] = sum(r["best_reward"] >= r["b0_reward"] for r in rs)
        table.append(row)
    b0 = runs[0]["b0_reward"]
    doc = {"budget": args.budget, "seeds": args.seeds, "target_flops": args.target, "estimator": DEFAULT_ESTIMATOR,
           "constraint": "soft", "b0_reward": b0, "seconds_total": round(total, 1), "cache_hits": est.hits,
           "runs": runs, "table": table,
           "command": "python scripts/compare_strategies.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    atomic_write_text(out / "strategies.json", json.dumps(doc, indent=1) + "\n")

    head = "| strategy | " + " | ".join(f"best reward @{c}" for c in checkpoints) + " | best FLOPs (M) per seed | within ±10% | ≥ B0 |"
    lines = [f"# Strategies at equal budgets ({args.budget} trials, seeds {args.seeds})", "",
             f"`{doc['command']}` — estimator {DEFAULT_ESTIMATOR} (32 px, embedded sample), soft reward, "
             f"target {args.target / 1e6:.0f}M FLOPs; EfficientNet-B0 scores {b0:.4f} (it is trial 0 of every run). "
             f"Mean ± sd over seeds. Total {total / 60:.1f} min.", "", head,
             "|" + "---|" * (len(checkpoints) + 4)]
    for row in table:
        cells = [f"{row[f'at_{c}'][0]:.4f} ± {row[f'at_{c}'][1]:.4f}" for c in checkpoints]
        lines.append(f"| {row['strategy']} | " + " | ".join(cells) +
                     f" | {row['best_flops_M']} | {row['within_10pct']}/{len(args.seeds)} | {row['beats_b0']}/{len(args.seeds)} |")
    atomic_write_text(out / "strategies.md", "\n".join(lines) + "\n")

    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for i, strategy in enumerate(args.strategies):
        rs = [r["trajectory"] for r in runs if r["strategy"] == strategy]
        n = min(len(t) for t in rs)
        mean = [statistics.mean(t[k] for t in rs) for k in range(n)]
        lo = [min(t[k] for t in rs) for k in range(n)]
        hi = [max(t[k] for t in rs) for k in range(n)]
        ax.plot(range(1, n + 1), mean, label=strategy, color=f"C{i}")
        ax.fill_between(range(1, n + 1), lo, hi, color=f"C{i}", alpha=0.12)
    ax.axhline(b0, color="k", ls="--", lw=1, label="EfficientNet-B0")
    ax.set_xlabel("complete trials")
    ax.set_ylabel("best reward so far (mean, min-max band)")
    ax.set_title(f"{DEFAULT_ESTIMATOR}, soft reward, 400M FLOPs, {len(args.seeds)} seeds")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(out / "strategies.png", buf.getvalue())
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
