"""Seed noise of an estimator: the same architectures scored with several seeds.

    python scripts/estimator_noise.py                       # the search's default estimator
    python scripts/estimator_noise.py --estimator train --data sample --seeds 4 --n 5

Scores EfficientNet-B0 and the first ``--n - 1`` other ground-truth architectures
(``results/ground_truth/table.json``) with seeds 0..``--seeds``-1 and writes
``results/evaluation/estimator_noise.json``: per architecture the scores, and the pooled
standard deviation across seeds (the noise an additive reward's penalty must exceed:
``nas.reward.ABSOLUTE_BETA``).  Rows go to ``estimator_noise_rows.jsonl`` as they finish.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _rows import read_ground_truth, read_rows  # noqa: E402
from nas.atomic import atomic_write_text  # noqa: E402
from nas.spec import Spec  # noqa: E402

OUT = ROOT / "results" / "evaluation"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--estimator", default="train")
    ap.add_argument("--data", default="sample")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--n", type=int, default=5, help="architectures (B0 first)")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from nas.data import load_dataset
    from nas.estimators import make_estimator

    table = read_ground_truth(ROOT / "results" / "ground_truth" / "table.json")
    specs = [(r["label"], Spec.from_dict(r["spec"])) for r in table["rows"][: args.n]]
    data = load_dataset(args.data, seed=0)
    key = f"{args.estimator}@{args.data}"
    rows_path = OUT / "estimator_noise_rows.jsonl"
    done = {(r["fingerprint"], r["seed"]): r for r in read_rows(rows_path) if r["key"] == key}
    with open(rows_path, "a") as log:
        for label, s in specs:
            for seed in range(args.seeds):
                if (s.fingerprint(), seed) in done:
                    continue
                e = make_estimator(args.estimator, data, seed=seed)(s)
                row = {"key": key, "label": label, "fingerprint": s.fingerprint(), "seed": seed, "score": e.score,
                       "seconds": e.seconds}
                log.write(json.dumps(row) + "\n")
                log.flush()
                done[(s.fingerprint(), seed)] = row
                print(f"{label} seed {seed}: {e.score} ({e.seconds:.1f} s)", file=sys.stderr, flush=True)
    per, devs = [], []
    for label, s in specs:
        scores = [done[(s.fingerprint(), k)]["score"] for k in range(args.seeds)
                  if done.get((s.fingerprint(), k), {}).get("score") is not None]
        per.append({"label": label, "scores": scores, "sd": float(np.std(scores, ddof=1)) if len(scores) > 1 else None})
        if len(scores) > 1:
            devs.extend(np.asarray(scores) - np.mean(scores))
    dof = sum(len(p["scores"]) - 1 for p in per if len(p["scores"]) > 1)
    pooled = float(np.sqrt(np.sum(np.square(devs)) / dof)) if dof else None
    doc = {"command": "python scripts/estimator_noise.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "estimator": args.estimator, "data": args.data, "seeds": args.seeds, "pooled_seed_sd": pooled,
           "architectures": per, "measured": time.strftime("%Y-%m-%d")}
    atomic_write_text(OUT / "estimator_noise.json", json.dumps(doc, indent=1) + "\n")
    print(f"pooled seed sd {pooled}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
