"""Tuning our own strategies on NAS-Bench-Macro (issue 24): which settings find the optimum more often.

    python scripts/nas_bench_macro_tuning.py [--seeds 100] [--budget 100]

For regularized evolution (population size, tournament size) and the policy-gradient controller
(learning rate), runs ``--seeds`` searches of ``--budget`` trials each through the same ask/tell
loop as the study (``nas_bench_macro_study.search_keys``: the no-target setting, table lookups),
and writes ``results/benchmarks/nas-bench-macro/tuning.json`` and ``tuning.md``: per setting the
mean regret at 50 and at the budget and how often the optimum (either of the table's two tied
best keys) was found, with a 95 % Wilson interval.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from nas_bench_macro_study import _wilson, search_keys  # noqa: E402

OUT = ROOT / "results" / "benchmarks" / "nas-bench-macro"


def _configs():
    from nas.samplers import PolicyGradientSampler, RegularizedEvolutionSampler

    for pop in (10, 20, 40):
        for sample in (3, 5, 10):
            if sample <= pop:
                yield (f"evolution population {pop}, tournament {sample}", "evolution",
                       lambda seed, p=pop, s=sample: RegularizedEvolutionSampler(population_size=p, sample_size=s,
                                                                                 seed=seed))
    for lr in (0.05, 0.1, 0.2, 0.5):
        yield f"rl learning rate {lr}", "rl", lambda seed, lr=lr: PolicyGradientSampler(learning_rate=lr, seed=seed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--budget", type=int, default=100)
    args = ap.parse_args(argv)
    import optuna

    from nas.benchmarks.nas_bench_macro import load_table

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = load_table()
    best = table.best().mean_acc
    optimum = {r.key for r in table if r.mean_acc == best}
    rows = {}
    for name, strategy, factory in _configs():
        t0 = time.process_time()
        regrets50, regrets, found = [], [], 0
        for seed in range(args.seeds):
            keys = search_keys("accuracy", strategy, seed, args.budget, sampler=factory(seed))
            top50 = max(table[k].mean_acc for k in keys[:50])
            top = max(table[k].mean_acc for k in keys)
            regrets50.append(best - top50)
            regrets.append(best - top)
            found += any(k in optimum for k in keys)
        lo, hi = _wilson(found, args.seeds)
        rows[name] = {"strategy": strategy, "mean_regret_50": sum(regrets50) / len(regrets50),
                      f"mean_regret_{args.budget}": sum(regrets) / len(regrets), "p_best": found / args.seeds,
                      "p_best_ci95": [lo, hi], "cpu_seconds": time.process_time() - t0}
        print(f"{name}: regret@50 {rows[name]['mean_regret_50']:.3f}, regret@{args.budget} "
              f"{rows[name][f'mean_regret_{args.budget}']:.3f}, optimum found {found}/{args.seeds}", flush=True)
    result = {"command": "python scripts/nas_bench_macro_tuning.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
              "seeds": args.seeds, "budget": args.budget, "best_accuracy": best, "settings": rows}
    (OUT / "tuning.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# Tuning our strategies on NAS-Bench-Macro ({args.seeds} seeds, {args.budget} trials, no target)", "",
             f"`{result['command']}`", "",
             f"| setting | regret @50 | regret @{args.budget} | optimum found @{args.budget} (95 %) |",
             "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['mean_regret_50']:.3f} | {r[f'mean_regret_{args.budget}']:.3f} | "
                     f"{r['p_best']:.2f} ({r['p_best_ci95'][0]:.2f}–{r['p_best_ci95'][1]:.2f}) |")
    (OUT / "tuning.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
