"""Which training recipe ranks networks of different sizes fairly in one short epoch?

Trains three size rungs of the ``mnasnet-b0`` space (all stages filters x0.75 / layers -1,
EfficientNet-B0 itself, filters x1.25 / layers +1; see ``capacity_study.py``) with each recipe,
one epoch of the embedded sample at 16 px (the search's default proxy task), seed 0:

    python scripts/recipe_sweep.py
    python scripts/recipe_sweep.py --recipes efficientnet --rungs b0 --memory-format contiguous

prints one line per (recipe, rung) and writes ``results/evaluation/recipe_sweep.json`` (the
default run only).  ``--memory-format contiguous`` trains as ``nas.train`` did before it moved to
channels-last, to show how much float rounding moves a one-epoch accuracy.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from capacity_study import ladder_specs  # noqa: E402
from nas.atomic import atomic_write_text  # noqa: E402

RUNGS = {"small": "filters x0.75, layers -1", "b0": "filters x1.0, layers +0", "large": "filters x1.25, layers +1"}


def recipes() -> dict:
    from nas.train import RECIPES

    return {
        "efficientnet": RECIPES["efficientnet"],
        "adamw-0.004": dataclasses.replace(RECIPES["adamw"], name="adamw-0.004", lr=0.004),
        "adamw": RECIPES["adamw"],
        "sgd-nesterov-0.4": dataclasses.replace(RECIPES["resnet"], name="sgd-nesterov-0.4", lr=0.4, nesterov=True,
                                                weight_decay=5e-5, label_smoothing=0.1, warmup=0.1,
                                                schedule="cosine"),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", default=None, help="default: all four")
    ap.add_argument("--rungs", nargs="+", choices=list(RUNGS), default=list(RUNGS))
    ap.add_argument("--memory-format", choices=("channels-last", "contiguous"), default="channels-last")
    args = ap.parse_args(argv)

    import torch

    import nas.train
    from nas.allocator import tune_allocator
    from nas.data import load_dataset

    torch.set_num_threads(1)
    tune_allocator()
    if args.memory_format == "contiguous":
        nas.train.MEMORY_FORMAT = torch.contiguous_format
    table = recipes()
    names = args.recipes or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; choose from {list(table)}")
    specs = dict(ladder_specs())
    data = load_dataset("sample", seed=0)
    rows = []
    for name in names:
        for rung in args.rungs:
            r = nas.train.train_and_evaluate(specs[RUNGS[rung]], data, epochs=1, resolution=16, recipe=table[name],
                                             seed=0)
            rows.append({"recipe": name, "rung": RUNGS[rung], "accuracy": r.accuracy, "seconds": r.seconds,
                         "memory_format": args.memory_format})
            print(f"{name:<17} {RUNGS[rung]:<26} accuracy {r.accuracy:.3f}  ({r.seconds:.0f} s)", flush=True)
    if argv is None and args.recipes is None and args.rungs == list(RUNGS) and args.memory_format == "channels-last":
        out = ROOT / "results" / "evaluation" / "recipe_sweep.json"
        atomic_write_text(out, json.dumps({"command": "python scripts/recipe_sweep.py", "rows": rows}, indent=2)
                          + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
