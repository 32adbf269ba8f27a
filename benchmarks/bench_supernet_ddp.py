"""Data-parallel supernet training: N processes under torchrun against one process, at equal global batch.

    python benchmarks/bench_supernet_ddp.py [--epochs 2] [--data sample] [--output results/supernet/distributed.md]

Runs, one after the other on this machine (keep it otherwise idle):

* one process with one thread, and one process with N threads (the same cores, used by threads);
* ``torchrun --standalone --nproc-per-node N "$(command -v nas-supernet)" train ...`` with one thread each.

Same settings, seed and global batch for all; prints and writes steps per second (training
seconds only, from ``train.json``) and the largest and smallest members' held-out accuracy
after the last epoch.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(argv: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{r.stderr[-2000:]}")
    s = json.loads((out / "train.json").read_text())
    last = s["history"][-1]
    return {"command": " ".join(argv), "steps": s["step"], "train_seconds": s["train_seconds"],
            "steps_per_second": s["step"] / s["train_seconds"], "wall_seconds": time.perf_counter() - t0,
            "largest": last.get("largest_accuracy"), "smallest": last.get("smallest_accuracy"),
            "world_size": s.get("world_size", 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--data", default="sample")
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--output", default=str(ROOT / "results" / "supernet" / "distributed.md"))
    args = ap.parse_args()
    exe = shutil.which("nas-supernet")
    torchrun = shutil.which("torchrun")
    if not exe or not torchrun:
        sys.exit("needs nas-supernet and torchrun on PATH (pip install -e .)")
    n = args.processes
    common = ["train", "--data", args.data, "--epochs", str(args.epochs), "--resolution", str(args.resolution),
              "--batch-size", str(args.batch_size), "--quiet", "--json"]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, pre, threads in (("1 process, 1 thread", [exe], 1), (f"1 process, {n} threads", [exe], n),
                                    (f"{n} processes (torchrun), 1 thread each",
                                     [torchrun, "--standalone", "--nproc-per-node", str(n), exe], 1)):
            out = Path(tmp) / label.replace(" ", "_").replace(",", "")
            rows[label] = _run([*pre, *common, "--threads", str(threads), "--output", str(out)], out)
            r = rows[label]
            print(f"{label}: {r['steps_per_second']:.3f} steps/s, largest {r['largest']}, smallest {r['smallest']}",
                  flush=True)
    base = rows["1 process, 1 thread"]["steps_per_second"]
    lines = ["# Data-parallel supernet training (torchrun) against one process", "",
             f"`python benchmarks/bench_supernet_ddp.py --epochs {args.epochs} --data {args.data} --processes {n}` "
             f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores; global batch {args.batch_size}, "
             f"{args.resolution} px, seed 0).", "",
             "| run | steps/s | × one process, one thread | largest | smallest | training s |", "|---|---|---|---|---|---|"]
    for label, r in rows.items():
        lines.append(f"| {label} | {r['steps_per_second']:.3f} | {r['steps_per_second'] / base:.2f} | "
                     f"{r['largest']:.3f} | {r['smallest']:.3f} | {r['train_seconds']:.0f} |")
    lines += ["", "Commands:", ""] + [f"    {r['command']}" for r in rows.values()]
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
