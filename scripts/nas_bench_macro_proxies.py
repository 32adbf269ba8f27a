"""Score estimators (zero-cost proxies, the short training) against NAS-Bench-Macro's CIFAR-10 table.

    python scripts/nas_bench_macro_proxies.py --data cifar:/path/to/cifar-10-batches-py \\
        --estimators proxy:synflow proxy:grad_norm proxy:snip --every 50 --out proxies.json

Needs CIFAR-10 images (the table's task), which this repository does not ship: ``--data`` is
any dataset ``nas.data.load_dataset`` reads, normally ``cifar:DIR``.  Every ``--every``-th
member (by key) is scored by each estimator; the output has, per estimator, Spearman's rho
with the table's mean accuracy, beside the two baselines a proxy must beat (parameters and
the table's FLOPs), and every member's scores.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _rows import spearman  # noqa: E402

from nas.atomic import atomic_write_text  # noqa: E402


def study(data: str, estimators: list[str], every: int, seed: int) -> dict:
    import torch

    from nas.benchmarks.nas_bench_macro import load_table, spec_for_key
    from nas.data import load_dataset
    from nas.estimators import make_estimator

    torch.set_num_threads(1)
    table = load_table()
    keys = sorted(table.records)[::every]
    dataset = load_dataset(data, seed=seed)
    acc = [table[k].mean_acc for k in keys]
    out = {"data": data, "seed": seed, "every": every, "members": len(keys),
           "baselines": {"params": spearman([table[k].params for k in keys], acc),
                         "flops": spearman([table[k].flops for k in keys], acc)},
           "estimators": {}, "rows": {k: {"mean_acc": table[k].mean_acc} for k in keys}}
    for name in estimators:
        est = make_estimator(name, dataset, seed=seed)
        scores = []
        for k in keys:
            e = est(spec_for_key(k))
            out["rows"][k][name] = None if e.failed else e.score
            scores.append(e.score)
        ok = [(s, a) for s, a in zip(scores, acc) if s is not None]
        out["estimators"][name] = {"spearman": spearman(*zip(*ok)) if len(ok) > 2 else None,
                                   "scored": len(ok), "failed": len(keys) - len(ok)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a dataset nas.data reads, e.g. cifar:DIR (CIFAR-10)")
    ap.add_argument("--estimators", nargs="+", default=["proxy:synflow", "proxy:grad_norm", "proxy:snip"])
    ap.add_argument("--every", type=int, default=50, help="score every N-th member by key (default 50: 132 members)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="nas_bench_macro_proxies.json")
    args = ap.parse_args(argv)
    if args.every < 1:
        print("nas_bench_macro_proxies: --every must be >= 1", file=sys.stderr)
        return 2
    res = study(args.data, args.estimators, args.every, args.seed)
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    for name, r in res["estimators"].items():
        print(f"{name}: Spearman {r['spearman']} over {r['scored']} members")
    print(f"baselines: params {res['baselines']['params']:.3f}, table FLOPs {res['baselines']['flops']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
