"""Every search strategy on NAS-Bench-Macro by lookup: regret, P(best found), rank of the best, over many seeds.

    nice -n 19 python scripts/nas_bench_macro_study.py run --seeds 100
    python scripts/nas_bench_macro_study.py report

Each run is one strategy and seed on the ``nas-bench-macro`` space, scored by the
table's mean accuracy (the ``nas-bench-macro`` estimator's answer), for 200 trials;
every budget (10, 25, 50, 100, 200) is read off the same run's first trials.  The
strategy's sampler (``nas.samplers.make_sampler``) is asked and told directly, in this
process, exactly as ``nas-search`` asks and tells it (same parameters, order, reward
and directions: a test holds the keys equal to ``nas.search.run_search``'s), without
the session's per-trial bookkeeping, so a run costs the sampler's own time.  Two
settings:

* ``accuracy``: no target, the reward is the accuracy (``nas-search --space
  nas-bench-macro --estimator nas-bench-macro``); the best is the table's best,
  93.127 % (``22212220`` and ``22212202``, tied);
* ``flops40m``: ``--target-flops 40M --flops-convention conv-linear --constraint hard``;
  the best found is the most accurate member <= 40M table FLOPs among the trials (a
  run with none scores the feasible set's worst), against 91.507 %.

Reported per strategy and budget: mean regret to the best in percentage points with
a 95 % interval (mean +- 1.96 standard errors), the probability that the best was
found (Wilson 95 % interval), the mean rank of the best found (1 = the best; in the
feasible set for ``flops40m``).  Random search's expected regret is exact (below) and
the random row is checked against it.

Resumable: each finished run is appended at once to ``runs.jsonl`` (one JSON line;
a torn last line is skipped), and ``run`` skips what is there.  ``report`` writes
``study.json``, ``README``'s table (``table.md``) and ``regret.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _rows import read_rows  # noqa: E402

from nas.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402

OUT = Path("results/benchmarks/nas-bench-macro")
BUDGETS = (10, 25, 50, 100, 200)
SETTINGS = {
    "accuracy": {"target": None, "constraint": "absolute", "limit": None},
    "flops40m": {"target": 40e6, "constraint": "hard", "limit": 40e6},
}
STRATEGY_ORDER = ("random", "tpe", "evolution", "rl", "nsga2")


def _strategies() -> list[str]:
    from nas.samplers import STRATEGY_NAMES

    return [s for s in STRATEGY_ORDER if s in STRATEGY_NAMES] + [s for s in STRATEGY_NAMES if s not in STRATEGY_ORDER]


def _feasible(rec, limit) -> bool:
    return limit is None or rec.flops <= limit


def search_keys(setting: str, strategy: str, seed: int, budget: int, sampler=None) -> list[str]:
    """The keys of one search's complete trials, in order: the strategy's sampler (nas.samplers) asked and
    told directly, with table lookups, as ``nas-search`` asks and tells it (same parameters in the same
    order, same reward, same directions; tests/test_nas_bench_macro.py holds the two equal)."""
    import optuna

    from nas.benchmarks.nas_bench_macro import load_table
    from nas.reward import Reward
    from nas.samplers import make_sampler
    from nas.search.session import directions_for
    from search_spaces import get_space

    s = SETTINGS[setting]
    space = get_space("nas-bench-macro")
    table = load_table()
    dists = space.distributions()
    reward = Reward.make(s["target"], "flops", s["constraint"])
    directions = directions_for(strategy)
    # ``sampler``: another configuration of the strategy (the tuning sweep, nas_bench_macro_tuning.py)
    study = optuna.create_study(sampler=sampler or make_sampler(strategy, seed=seed), directions=directions)
    keys: list[str] = []
    while len(keys) < budget:
        trial = study.ask()
        key = space.key({n: trial.suggest_categorical(n, d.choices) for n, d in dists.items()})
        rec = table[key]
        study.tell(trial, (rec.accuracy, float(rec.flops)) if len(directions) > 1 else reward(rec.accuracy, rec.flops))
        keys.append(key)
    return keys


def run_one(setting: str, strategy: str, seed: int, budget: int) -> dict:
    """One search; returns its row (the key of the best found at every budget, and the trials' keys)."""
    from nas.benchmarks.nas_bench_macro import load_table

    table = load_table()
    limit = SETTINGS[setting]["limit"]
    t0 = time.process_time()
    keys = search_keys(setting, strategy, seed, budget)
    seconds = time.process_time() - t0
    best = {}
    for b in BUDGETS:
        if b > len(keys):
            break
        feasible = [k for k in keys[:b] if _feasible(table[k], limit)]
        best[str(b)] = max(feasible, key=lambda k: (table[k].mean_acc, k)) if feasible else None
    return {"setting": setting, "strategy": strategy, "seed": seed, "budget": budget, "best": best,
            "keys": "".join(keys), "unique": len(set(keys)), "cpu_seconds": round(seconds, 3)}


def _append(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def cmd_run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = {(r["setting"], r["strategy"], r["seed"]) for r in read_rows(log) if r.get("budget") == args.budget}
    strategies = args.strategies or _strategies()
    todo = [(st, s, seed) for seed in range(args.seeds) for st in args.settings for s in strategies
            if (st, s, seed) not in done and seed < args.max_seeds.get(s, args.seeds)]
    t0 = time.perf_counter()
    for i, (setting, strategy, seed) in enumerate(todo, 1):
        row = run_one(setting, strategy, seed, args.budget)
        _append(log, row)
        elapsed = time.perf_counter() - t0
        print(f"[{i}/{len(todo)} | {elapsed / 60:.1f} min, ETA {elapsed / i * (len(todo) - i) / 60:.0f} min] "
              f"{setting} {strategy} seed {seed}: best@200 {row['best'].get('200')} ({row['cpu_seconds']:.2f} CPU s)",
              file=sys.stderr, flush=True)
    return 0


# ---------------------------------------------------------------- statistics


def random_expected_regret(means: list[float], best: float, n: int, replacement: bool, infeasible: int = 0,
                           worst: float | None = None) -> float:
    """Exact expected regret of ``n`` uniform draws from ``len(means) + infeasible`` members, with
    replacement (Optuna's RandomSampler: each layer drawn independently) or without (the shared
    README's simulation).  ``means``: the feasible members' accuracies; a draw of one of the
    ``infeasible`` others counts for nothing, and a run that drew no feasible member scores ``worst``."""
    xs = sorted(means)
    total = len(xs) + infeasible

    def p_all_within(m: int) -> float:  # P(every draw falls among m given members)
        if replacement:
            return (m / total) ** n
        if m < n:
            return 0.0
        return math.exp(math.lgamma(m + 1) - math.lgamma(m - n + 1) - math.lgamma(total + 1)
                        + math.lgamma(total - n + 1))

    prev = p_all_within(infeasible)  # no feasible member drawn
    expected = (worst if worst is not None else 0.0) * prev
    for i in range(1, len(xs) + 1):  # P(best feasible drawn <= xs[i-1], or none)
        cdf = p_all_within(infeasible + i)
        expected += xs[i - 1] * (cdf - prev)
        prev = cdf
    return best - expected


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    z = 1.96
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def summarize(rows: list[dict]) -> dict:
    from nas.benchmarks.nas_bench_macro import load_table

    table = load_table()
    out = {}
    for setting, s in SETTINGS.items():
        feasible = [r for r in table if _feasible(r, s["limit"])]
        best = max(r.mean_acc for r in feasible)
        worst = min(r.mean_acc for r in feasible)
        sorted_desc = sorted((-r.mean_acc for r in feasible))
        import bisect

        def rank(key):
            return 1 + bisect.bisect_left(sorted_desc, -table[key].mean_acc)

        means = [r.mean_acc for r in feasible]
        others = len(table) - len(feasible)

        def exact(b, replacement):
            return round(random_expected_regret(means, best, b, replacement, others, worst), 4)

        block = {"best_accuracy": best, "members": len(feasible), "worst_accuracy": worst,
                 "best_keys": sorted(r.key for r in feasible if r.mean_acc == best),
                 "random_exact": {str(b): {"with_replacement": exact(b, True), "without_replacement": exact(b, False)}
                                  for b in BUDGETS},
                 "strategies": {}}
        for strategy in _strategies():
            mine = [r for r in rows if r["setting"] == setting and r["strategy"] == strategy]
            if not mine:
                continue
            per = {}
            for b in BUDGETS:
                found = [r["best"].get(str(b)) for r in mine if str(b) in r["best"]]
                if not found:
                    continue
                regrets = [best - (table[k].mean_acc if k else worst) for k in found]
                n = len(regrets)
                mean = sum(regrets) / n
                sd = math.sqrt(sum((x - mean) ** 2 for x in regrets) / (n - 1)) if n > 1 else float("nan")
                hits = sum(1 for k in found if k and table[k].mean_acc == best)
                lo, hi = _wilson(hits, n)
                per[str(b)] = {"seeds": n, "mean_regret": round(mean, 4), "sd": round(sd, 4),
                               "ci95": [round(mean - 1.96 * sd / math.sqrt(n), 4),
                                        round(mean + 1.96 * sd / math.sqrt(n), 4)],
                               "p_best": round(hits / n, 4), "p_best_ci95": [round(lo, 4), round(hi, 4)],
                               "mean_rank": round(sum(rank(k) if k else len(feasible) for k in found) / n, 2),
                               "none_feasible": sum(1 for k in found if not k)}
            block["strategies"][strategy] = {
                "runs": len(mine), "cpu_seconds_per_run": round(sum(r["cpu_seconds"] for r in mine) / len(mine), 3),
                "unique_per_200": round(sum(r["unique"] for r in mine) / len(mine), 1), "budgets": per}
        out[setting] = block
    return out


def table_md(summary: dict) -> str:
    lines = []
    for setting, block in summary.items():
        lines += [f"### {setting}: best {block['best_accuracy']:.3f} % over {block['members']} members", "",
                  "| strategy | seeds | " + " | ".join(f"regret @{b}" for b in BUDGETS)
                  + " | P(best) @100 | P(best) @200 "
                  "| mean rank @50 | mean rank @200 |",
                  "|---|---|" + "---|" * (len(BUDGETS) + 4)]
        for strategy, st in block["strategies"].items():
            bud = st["budgets"]

            def cell(b, key="mean_regret"):
                x = bud.get(str(b))
                if x is None:
                    return "-"
                if key == "mean_regret":
                    return f"{x['mean_regret']:.3f} ({x['ci95'][0]:.3f}-{x['ci95'][1]:.3f})"
                if key == "p_best":
                    return f"{x['p_best']:.2f} ({x['p_best_ci95'][0]:.2f}-{x['p_best_ci95'][1]:.2f})"
                return f"{x[key]:.1f}"

            seeds = min((x["seeds"] for x in bud.values()), default=0)
            lines.append(f"| {strategy} | {seeds} | " + " | ".join(cell(b) for b in BUDGETS)
                         + f" | {cell(100, 'p_best')} | {cell(200, 'p_best')} | {cell(50, 'mean_rank')} "
                           f"| {cell(200, 'mean_rank')} |")
        ex = block["random_exact"]
        lines.append("| random, exact (with replacement) | - | "
                     + " | ".join(f"{ex[str(b)]['with_replacement']:.3f}" for b in BUDGETS) + " | | | | |")
        lines.append("| random, exact (without replacement) | - | "
                     + " | ".join(f"{ex[str(b)]['without_replacement']:.3f}" for b in BUDGETS) + " | | | | |")
        lines.append("")
    return "\n".join(lines)


def regret_png(summary: dict) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4.5), dpi=100)
    for ax, (setting, block) in zip(axes, summary.items()):
        for i, (strategy, st) in enumerate(block["strategies"].items()):
            bs = [b for b in BUDGETS if str(b) in st["budgets"]]
            m = [st["budgets"][str(b)]["mean_regret"] for b in bs]
            lo = [st["budgets"][str(b)]["ci95"][0] for b in bs]
            hi = [st["budgets"][str(b)]["ci95"][1] for b in bs]
            n = min(st["budgets"][str(b)]["seeds"] for b in bs)
            ax.plot(bs, m, "-o", ms=3, color=f"C{i}", label=f"{strategy} ({n} seeds)")
            ax.fill_between(bs, lo, hi, color=f"C{i}", alpha=0.15)
        ex = block["random_exact"]
        ax.plot(BUDGETS, [ex[str(b)]["with_replacement"] for b in BUDGETS], "k:", lw=1,
                label="random, exact")
        ax.set_xscale("log")
        ax.set_xticks(BUDGETS)
        ax.set_xticklabels([str(b) for b in BUDGETS])
        ax.set_xlabel("complete trials")
        ax.set_ylabel("mean regret (accuracy points, 95 % interval)")
        ax.set_title(f"NAS-Bench-Macro, {setting} (best {block['best_accuracy']:.3f} %)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def cmd_report(args) -> int:
    out = Path(args.out)
    rows = [r for r in read_rows(out / "runs.jsonl") if r.get("budget") == args.budget]
    summary = summarize(rows)
    atomic_write_text(out / "study.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "table.md", table_md(summary) + "\n")
    atomic_write_bytes(out / "regret.png", regret_png(summary))
    print(table_md(summary))
    return 0


def _max_seeds(text: str) -> dict:
    out = {}
    for part in filter(None, (text or "").split(",")):
        name, _, n = part.partition("=")
        out[name] = int(n)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (or resume) the searches, one JSON line per finished run")
    r.add_argument("--seeds", type=int, default=100, help="seeds 0..N-1 per strategy and setting (default 100)")
    r.add_argument("--max-seeds", type=_max_seeds, default={}, metavar="S=N,...",
                   help="fewer seeds for slow strategies, e.g. rl=50")
    r.add_argument("--strategies", nargs="+", help="default: every strategy of nas.samplers.STRATEGIES")
    r.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    r.add_argument("--budget", type=int, default=max(BUDGETS))
    r.add_argument("--out", default=str(OUT))
    p = sub.add_parser("report", help="study.json, table.md and regret.png from runs.jsonl")
    p.add_argument("--budget", type=int, default=max(BUDGETS))
    p.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return cmd_run(args) if args.cmd == "run" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
