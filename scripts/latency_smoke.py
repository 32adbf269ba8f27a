"""A small end-to-end check of the latency predictor that fits in a few minutes, for each clock.

A table restricted to the pieces of 5 fit networks (B0 + 4 seeded members, seed 0) and 12
validation members (seed 1) of ``mnasnet-b0`` at 224 px, torch backend, 1 thread, the protocol
(``nas.latency.Protocol``) with 5 warm-ups and 15 runs (its committed outputs were measured with the
old protocol: the median of 15); the overhead fitted on the 5, then ``nas.latency.validate`` on the 12 (each measured
twice: the noise floor).  Not the real validation (``nas-latency validate``, 100 members of a full
table, idle cores): this shows, on whatever load the machine has, what the clock does to the
noise and how close the predictor comes to it::

    python scripts/latency_smoke.py --output results/latency/smoke.md
    python scripts/latency_smoke.py --clocks cpu --evict-mb 0,4,32     # does evicting the caches help?
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.allocator import tune_allocator  # noqa: E402
from nas.latency import (BACKENDS, build_table, fit_overhead, new_table, space_members, spec_entries,  # noqa: E402
                         validate)
from nas.atomic import atomic_write_text  # noqa: E402
from search_spaces import get_space  # noqa: E402


def run(clock: str, evict_mb: float, resolution: int, n_fit: int, n_val: int) -> list[str]:
    sp = get_space("mnasnet-b0")
    fit = space_members(sp, n_fit, 0, resolution, skeleton_first=True)
    members = space_members(sp, n_val, 1, resolution)
    entries = {e.key: e for s in fit + members for _, e in spec_entries(s)}
    backend = BACKENDS["torch"]
    table = new_table(space=sp.name, resolution=resolution, backend=backend, threads=1, warmup=5, runs=15,
                      clock=clock, evict_bytes=int(evict_mb * 2**20), expected_entries=len(entries), fit_networks=len(fit))
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    build_table(table, entries, backend)
    fit_overhead(table, fit, backend)
    r = validate(table, members, backend)
    seconds = time.perf_counter() - t0
    ratios = [n["measured"] / n["sum"] for n in table.fit["networks"]]
    nz = r["noise"]
    return [f"| {clock} | {evict_mb:g} | {load0:.1f} | {len(entries)} | {min(ratios):.2f}–{max(ratios):.2f} | "
            f"{table.overhead * 1e3:.2f} | {r['within_10pct']:.0%} | {r['rmspe']:.1%} | {r['worst_error']:+.1%} | "
            f"{nz['within_10pct']:.0%} | {nz['rmspe']:.1%} | {seconds:.0f} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clocks", default="cpu,wall")
    ap.add_argument("--evict-mb", default="0", help="comma-separated cache sweeps to compare (MB; 0 = off)")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--fit", type=int, default=5)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--output", help="write the table as markdown here")
    args = ap.parse_args()
    tune_allocator()
    lines = ["| clock | evict MB | load (1 min) at start | pieces | fit networks: measured / summed | overhead ms | "
             "predicted within ±10 % | RMSPE | worst | noise within ±10 % | noise RMSPE | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for clock in args.clocks.split(","):
        for evict in args.evict_mb.split(","):
            lines += run(clock, float(evict), args.resolution, args.fit, args.n)
            print(lines[-1], flush=True)
    cmd = "python scripts/latency_smoke.py " + " ".join(sys.argv[1:])
    text = (f"# Latency predictor smoke check\n\n`{cmd}` ({args.n} validation members, {args.fit} fit networks, "
            f"{args.resolution} px, torch, 1 thread; machine: {os.cpu_count()} cores, load shown)\n\n"
            + "\n".join(lines) + "\n")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.output, text)
    print(text)


if __name__ == "__main__":
    main()
