"""``nas-latency table | validate | predict | refit``: a per-layer latency table, checked against measurement.

::

    nas-latency table --space mnasnet-b0 --backend torch --threads 1 --output lat-cpu.json
    nas-latency validate --table lat-cpu.json --n 100 --json --output-dir results/latency
    nas-latency predict my_arch.json --table lat-cpu.json --json
    nas-latency refit --table lat-cpu.json --model affine

``table`` is resumable: rerun the same command after an interruption (or with
``--limit N`` to build it in pieces) and only what is missing is measured.  A
table of another set-up at ``--output`` is refused, never overwritten.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from . import RuntimeFailure, UsageError, command
from .latency_args import backend_for_device, backend_named, load_table, parser, space_named
from ..spec import MAX_RESOLUTION

def _table(args) -> int:
    from ..latency import FitError, TableError, complete_table, new_table, open_table, space_entries

    space = space_named(args.space)
    backend = backend_named(backend_for_device(args.backend, args.device))
    resolution = args.resolution or space.base.resolution
    if resolution > MAX_RESOLUTION:
        raise UsageError(f"--resolution must be at most {MAX_RESOLUTION}, got {resolution}")
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"--output {out} is a directory")
    if not out.parent.is_dir():
        raise UsageError(f"--output {out}: folder {out.parent} does not exist")
    if args.clock == "cpu" and (args.threads != 1 or not backend.cpu_clock):
        raise UsageError("--clock cpu times one CPU thread: it needs --threads 1 and a CPU backend")
    if args.evict_mb and backend.name == "cuda":
        raise UsageError("--evict-mb is for the CPU backends")
    if args.threads > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see nas-train --threads
    entries = space_entries(space, resolution)
    wanted = new_table(space=space.name, resolution=resolution, backend=backend, threads=args.threads,
                       warmup=args.warmup, runs=args.runs, clock=args.clock,
                       evict_bytes=int(args.evict_mb * 2**20), expected_entries=len(entries),
                       fit_networks=args.fit_networks, fit_model=args.fit_model)
    try:
        table = open_table(out, wanted, args.fit_model)
    except TableError as e:
        raise UsageError(str(e)) from None
    try:
        before, missing = complete_table(table, space, entries, backend, out, resolution=resolution,
                                         fit_networks=args.fit_networks, seed=args.seed, limit=args.limit,
                                         progress=not args.quiet)
    except FitError as e:  # the measured fit networks are kept: `refit --model constant` needs no measuring
        raise RuntimeFailure(f"{out}: {e}") from None
    if missing:
        print(f"{out}: {len(table.entries)} of {len(entries)} entries ({len(table.entries) - before} measured now); "
              f"rerun the same command to continue")
        return 0
    print(f"{out}: {len(table.entries)} entries, {table.describe()}; fit ({table.fit['model']}) on "
          f"{len(table.fit['networks'])} networks: scale {table.scale:.4f}, overhead {table.overhead * 1e3:.3f} ms")
    return 0


def _validate(args, argv) -> int:
    from ..latency import TableError, check_environment, run_validation, validation_members

    table = load_table(args.table)
    if not table.complete:
        raise UsageError(f"{args.table}: the table is incomplete ({len(table.entries)} of {table.expected_entries} "
                         f"entries, overhead {'fitted' if table.overhead is not None else 'not fitted'}); "
                         f"finish it with nas-latency table")
    if args.device is not None:
        wanted = backend_for_device("torch" if table.backend == "cuda" else table.backend, args.device)
        if wanted != table.backend:
            raise UsageError(f"{args.table}: the table was measured with backend {table.backend!r} on "
                             f"{table.device}, not on --device {args.device}")
    backend = backend_named(table.backend)
    try:
        check_environment(table, backend)
    except TableError as e:
        raise UsageError(f"{args.table}: {e}") from None
    space = space_named(table.space)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output-dir {out_dir} exists and is not a directory")
    try:
        members = validation_members(table, space, args.n, args.seed)
    except TableError as e:
        raise UsageError(str(e)) from None
    report = run_validation(table, members, backend, warmup=args.warmup, runs=args.runs, progress=not args.quiet,
                            out_dir=out_dir, command="nas-latency " + " ".join(shlex.quote(a) for a in argv))
    if args.json:
        keys = ("n", "within_10pct", "rmspe", "mean_error", "worst_error", "seconds_per_prediction",
                "seconds_per_measurement")
        summary = {k: report[k] for k in keys}
        summary["noise"] = {k: report["noise"][k] for k in ("within_10pct", "rmspe", "worst_error")}
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        nz = report["noise"]
        sys.stdout.write(
            f"{report['n']} random members; table: {table.describe()}\n"
            f"predicted vs measured: {report['within_10pct']:.1%} within ±10 %, RMSPE {report['rmspe']:.1%}, "
            f"worst {report['worst_error']:+.1%}\n"
            f"noise floor (measured twice): {nz['within_10pct']:.1%} within ±10 %, RMSPE {nz['rmspe']:.1%}, "
            f"worst {nz['worst_error']:+.1%}\n"
            f"per spec: predicting {report['seconds_per_prediction'] * 1e6:.0f} µs, measuring "
            + (f"{report['seconds_per_measurement']:.2f} s\n" if report["seconds_per_measurement"] else
               "(all measurements from the checkpoint)\n"))
    return 0


def _predict(args) -> int:
    from ..latency import TableError, predict
    from ..presets import load_spec

    spec = load_spec(args.spec)
    table = load_table(args.table)
    try:
        seconds = predict(spec, table)
    except TableError as e:
        raise UsageError(str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps({"seconds": seconds, "spec": spec.name, "fingerprint": spec.fingerprint(),
                                     "resolution": spec.resolution, "backend": table.backend, "device": table.device,
                                     "threads": table.threads, "table": str(args.table)}) + "\n")
    else:
        sys.stdout.write(f"{seconds * 1e3:.3f} ms predicted for {spec.name or 'the spec'} at {spec.resolution} px "
                         f"({table.describe()})\n")
    return 0


def _refit(args) -> int:
    from ..latency import TableError

    table = load_table(args.table)
    try:
        table.refit(args.model)
    except TableError as e:
        raise UsageError(str(e)) from None
    table.save(args.table)
    print(f"{args.table}: fit ({args.model}) on {len(table.fit['networks'])} networks: scale {table.scale:.4f}, "
          f"overhead {table.overhead * 1e3:.3f} ms")
    return 0


@command("nas-latency")
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    return {"table": lambda: _table(args), "validate": lambda: _validate(args, argv),
            "predict": lambda: _predict(args), "refit": lambda: _refit(args)}[args.cmd]()


entry = main.entry

if __name__ == "__main__":
    entry()
