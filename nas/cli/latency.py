"""``nas-latency table | validate | predict | refit``: a per-layer latency table, checked against measurement.

::

    nas-latency table --space mnasnet-b0 --backend torch --threads 1 --output lat-cpu.json
    nas-latency validate --table lat-cpu.json --n 100 --json --output-dir results/latency
    nas-latency refit lat-cpu.json --members 30                      # measure 30 whole members, fit the correction
    nas-latency predict my_arch.json --table lat-cpu.json --json
    nas-latency refit --table lat-cpu.json --model affine             # scale and overhead only, no measuring

Every measuring command refuses (one line, exit 1) while other work runs on the machine, unless
``--allow-load``; the load is recorded with what it measured.  ``table`` is resumable: rerun the same command after an interruption (or with
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

def _check_load(args, what: str) -> dict:
    from ..latency import BusyMachine, check_load

    try:
        return check_load(args.max_load, allow=args.allow_load,
                          warn=lambda m: print(f"nas-latency {what}: WARNING: {m}", file=sys.stderr))
    except BusyMachine as e:
        raise RuntimeFailure(str(e)) from None


def _table(args) -> int:
    from ..latency import (FitError, Protocol, TableError, complete_table, load_record, new_table, open_table,
                           space_entries)

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
    if args.core is not None and args.core >= 0 and hasattr(os, "sched_getaffinity") \
            and args.core not in os.sched_getaffinity(0):
        raise UsageError(f"--core {args.core}: not a core this process may run on")
    entries = space_entries(space, resolution)
    protocol = Protocol(threads=args.threads, core=args.core, warmup=args.warmup, runs=args.runs, rounds=args.rounds,
                        statistic=args.statistic, duet=args.duet, pause=args.pause, clock=args.clock,
                        evict_bytes=int(args.evict_mb * 2**20))
    wanted = new_table(space=space.name, resolution=resolution, backend=backend, expected_entries=len(entries),
                       fit_networks=args.fit_networks, fit_model=args.fit_model, protocol=protocol)
    try:
        table = open_table(out, wanted, args.fit_model)
    except TableError as e:
        raise UsageError(str(e)) from None
    before = _check_load(args, "table")
    table.load_log.append({"step": "table", "before": before})
    try:
        before, missing = complete_table(table, space, entries, backend, out, resolution=resolution,
                                         fit_networks=args.fit_networks, seed=args.seed, limit=args.limit,
                                         progress=not args.quiet)
    except FitError as e:  # the measured fit networks are kept: `refit --model constant` needs no measuring
        raise RuntimeFailure(f"{out}: {e}") from None
    table.load_log[-1]["after"] = load_record()
    table.save(out)
    if missing:
        print(f"{out}: {len(table.entries)} of {len(entries)} entries ({len(table.entries) - before} measured now); "
              f"rerun the same command to continue")
        return 0
    print(f"{out}: {len(table.entries)} entries, {table.describe()}; fit ({table.fit['model']}) on "
          f"{len(table.fit['networks'])} networks: scale {table.scale:.4f}, overhead {table.overhead * 1e3:.3f} ms; "
          f"protocol: {table.measure_protocol().describe()}; next: nas-latency refit {out} --members 30")
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
    if args.no_reference and table.measure_protocol().duet:
        raise UsageError(f"{args.table}: the table's protocol is duet-normalised: it needs the reference "
                         f"(drop --no-reference)")
    _check_load(args, "validate")
    report = run_validation(table, members, backend, warmup=args.warmup, runs=args.runs, progress=not args.quiet,
                            out_dir=out_dir, command="nas-latency " + " ".join(shlex.quote(a) for a in argv),
                            reference=not args.no_reference)
    if args.json:
        keys = ("n", "within_10pct", "rmspe", "mean_error", "worst_error", "spearman", "flops_spearman", "floor",
                "predictor_over_floor", "seconds_per_prediction", "seconds_per_measurement", "speed_ratio")
        summary = {k: report[k] for k in keys}
        summary["noise"] = {k: report["noise"][k] for k in ("within_10pct", "rmspe", "worst_error")}
        summary["alternatives"] = report["alternatives"]
        summary["load"] = report["load"]
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        sys.stdout.write(validate_text(report, table.describe()))
    return 0


def validate_text(report: dict, described: str) -> str:
    """What ``nas-latency validate`` prints: the predictor beside the floor, always."""
    nz = report["noise"]
    ld = report["load"]
    lines = [f"{report['n']} random held-out members, each measured twice; table: {described}",
             f"protocol: {_describe_protocol(report['protocol'])}",
             f"noise floor (the two measurements within ±10 % of their mean): {nz['within_10pct']:.1%}, "
             f"RMS {nz['rmspe']:.1%}, worst {nz['worst_error']:+.1%}",
             f"predicted vs measured (mean of the two): {report['within_10pct']:.1%} within ±10 %"
             + (f" ({report['predictor_over_floor']:.2f}x the floor)" if report["predictor_over_floor"] else "")
             + f", RMSPE {report['rmspe']:.1%}, worst {report['worst_error']:+.1%}",
             f"ranking: Spearman {report['spearman']:.3f} (FLOPs: {report['flops_spearman']:.3f})",
             "per spec: predicting {:.0f} µs, measuring {}".format(
                 report["seconds_per_prediction"] * 1e6,
                 f"{report['seconds_per_measurement']:.2f} s ({report['speed_ratio']:,.0f}x)"
                 if report["seconds_per_measurement"] else "(all measurements from the checkpoint)"),
             f"load average before {ld['before']['load1']:.2f} (other work {ld['before']['others']:.2f}), after "
             f"{ld['after']['load1']:.2f} on {ld['after']['cores']} cores"]
    alt = report.get("alternatives") or {}
    if alt:
        lines.append("floor / predictor within ±10 % by statistic: " + "; ".join(
            f"{k} {v['floor_within_10pct']:.0%} / {v['predictor_within_10pct']:.0%}" for k, v in alt.items()))
    return "\n".join(lines) + "\n"


def _describe_protocol(d: dict) -> str:
    from ..latency import Protocol

    try:
        return Protocol.from_dict(d).describe()
    except ValueError:
        return json.dumps(d)


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
    from ..latency import FEATURES, TableError, check_environment, refit_correction

    if args.table and args.table_path and args.table != args.table_path:
        raise UsageError("give the table once (TABLE or --table)")
    path = args.table or args.table_path
    if not path:
        raise UsageError("refit needs a table: nas-latency refit TABLE --members N (or --model constant|affine)")
    if (args.model is None) == (args.members is None):
        raise UsageError("give one of --members N (measure and fit the correction) and --model (no measuring)")
    table = load_table(path)
    if args.model is not None:
        try:
            table.refit(args.model)
        except TableError as e:
            raise UsageError(str(e)) from None
        table.save(path)
        print(f"{path}: fit ({args.model}) on {len(table.fit['networks'])} networks: scale {table.scale:.4f}, "
              f"overhead {table.overhead * 1e3:.3f} ms")
        return 0
    features = [f.strip() for f in args.features.split(",") if f.strip()]
    bad = [f for f in features if f not in FEATURES]
    if bad or not features:
        raise UsageError(f"--features: unknown feature {bad[0] if bad else '(none given)'}; features: {', '.join(FEATURES)}")
    if args.members < len(features) + 1:
        raise UsageError(f"--members must be at least {len(features) + 1} for {len(features)} features")
    if len(table.entries) < table.expected_entries:
        raise UsageError(f"{path}: the table is incomplete ({len(table.entries)} of {table.expected_entries} "
                         f"entries); finish it with nas-latency table")
    backend = backend_named(table.backend)
    try:
        check_environment(table, backend)
    except TableError as e:
        raise UsageError(f"{path}: {e}") from None
    _check_load(args, "refit")
    kw = {} if args.ridge is None else {"ridge": args.ridge}
    try:
        c = refit_correction(table, space_named(table.space), backend, Path(path), n=args.members, seed=args.seed,
                             features=features, progress=not args.quiet, **kw)
    except TableError as e:
        raise RuntimeFailure(f"{path}: {e}") from None
    coef = ", ".join(f"{n} {v * 1e3:+.4g}" for n, v in zip(c["features"], c["coef"]))
    print(f"{path}: correction fitted on {c['fit']['n']} measured members (seed {c['seed']}): "
          f"{c['fit']['within_10pct']:.0%} within ±10 % on them, RMSPE {c['fit']['rmspe']:.1%}; "
          f"features kept by leave-one-out: {c['fit']['selection']['chosen']}; coefficients (ms per unit): {coef}; "
          f"validate on held-out members with nas-latency validate --table {path}")
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
