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

from . import ArgumentParser, RuntimeFailure, UsageError, command, non_negative_int, positive_int, tune_allocator
from ..spec import MAX_RESOLUTION

DEFAULT_SPACE = "mnasnet-b0"  # search_spaces.DEFAULT_SPACE, read lazily


def _nonneg_float(label: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{label} must be a number, got {text!r}") from None
        if not 0 <= v < float("inf"):
            raise UsageError(f"{label} must be a finite number >= 0, got {text!r}")
        return v
    return parse


def _parser() -> ArgumentParser:
    from ..latency import BACKENDS, FIT_MODELS

    ap = ArgumentParser(prog="nas-latency", description="Per-layer latency tables: build, validate, predict.")
    sub = ap.add_subparsers(dest="cmd", metavar="{table,validate,predict,refit}")
    sub.required = True

    t = sub.add_parser("table", help="measure every distinct layer of a search space (resumable)")
    t.add_argument("--space", default=DEFAULT_SPACE, help=f"search space (default {DEFAULT_SPACE})")
    t.add_argument("--backend", default="torch", help=f"one of {', '.join(BACKENDS)} (default torch)")
    t.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or auto (CUDA when present): where --backend torch runs; --device cuda "
                        "is the cuda backend (default: the backend's own device, cpu for torch and onnxruntime)")
    t.add_argument("--threads", type=positive_int("--threads"), default=1, help="CPU threads (default 1)")
    t.add_argument("--output", required=True, help="the table (JSON); an existing one is continued")
    t.add_argument("--resolution", type=positive_int("--resolution"),
                   help="input resolution (default: the space's, 224 for mnasnet-b0)")
    t.add_argument("--warmup", type=non_negative_int("--warmup"), default=5, help="untimed passes (default 5)")
    t.add_argument("--runs", type=positive_int("--runs"), default=15, help="timed passes; the median counts (default 15)")
    t.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (default) or cpu: the thread's CPU time, with --threads 1 only; robust on a busy machine")
    t.add_argument("--evict-mb", type=_nonneg_float("--evict-mb"), default=0.0,
                   help="before each timed pass, sweep this many MB to evict the caches (CPU backends; default 0: off)")
    t.add_argument("--fit-networks", type=positive_int("--fit-networks"), default=8,
                   help="whole networks the overhead is fitted on: the skeleton + random members (default 8)")
    t.add_argument("--fit-model", choices=tuple(FIT_MODELS), default="constant", help="default constant")
    t.add_argument("--seed", type=non_negative_int("--seed"), default=0, help="seed of the fit networks (default 0)")
    t.add_argument("--limit", type=positive_int("--limit"), help="measure at most N entries in this run")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    v = sub.add_parser("validate", help="predicted vs measured on random members of the table's space")
    v.add_argument("--table", required=True)
    v.add_argument("--device", default=None,
                   help="check that the table was measured on this device (auto, cpu, cuda, cuda:N); "
                        "default: the table's")
    v.add_argument("--n", type=positive_int("--n"), default=100, help="random members (default 100)")
    v.add_argument("--seed", type=non_negative_int("--seed"), default=1, help="seed of the members (default 1; the fit used 0)")
    v.add_argument("--warmup", type=non_negative_int("--warmup"), help="default: the table's")
    v.add_argument("--runs", type=positive_int("--runs"), help="default: the table's")
    v.add_argument("--output-dir", help="write validate.json and validate.png here")
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    v.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("predict", help="predicted latency of a spec (no measuring)")
    p.add_argument("spec", help="a preset name, a JSON file, or a JSON string")
    p.add_argument("--table", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    r = sub.add_parser("refit", help="refit scale and overhead from the table's fit networks (no measuring)")
    r.add_argument("--table", required=True)
    r.add_argument("--model", choices=tuple(FIT_MODELS), required=True)
    return ap


def _load_table(path: str):
    from ..latency import LatencyTable, TableError

    try:
        return LatencyTable.load(path)
    except TableError as e:
        raise UsageError(str(e)) from None


def _backend(name: str):
    from ..latency import get_backend

    try:
        backend = get_backend(name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    reason = backend.unavailable()
    if reason:
        raise UsageError(f"--backend {name}: {reason}")
    return backend


def _backend_for_device(backend: str, device: str | None) -> str:
    """``--backend`` and ``--device`` -> the backend that measures there (torch on CUDA is the cuda backend)."""
    from ..devices import DeviceError, resolve_device

    if device is None:
        return backend
    try:
        dev = resolve_device(device)
    except DeviceError as e:
        raise UsageError(f"--device: {e}") from None
    if dev.type == "cuda":
        if dev.index not in (None, 0):
            raise UsageError(f"--device {device}: latency tables are measured on cuda:0 (set CUDA_VISIBLE_DEVICES "
                             f"to pick another GPU)")
        if backend not in ("torch", "cuda"):
            raise UsageError(f"--backend {backend} runs on the CPU only; on --device {device} use --backend torch")
        return "cuda"
    if backend == "cuda" and str(device).strip().lower() != "auto":
        raise UsageError(f"--backend cuda measures on a GPU, not on --device {device}")
    return backend


def _space(name: str):
    from search_spaces import get_space

    try:
        return get_space(name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None


def _table(args) -> int:
    from ..latency import (TableError, build_table, check_same_setup, fit_overhead, new_table, space_entries,
                           space_members)

    space = _space(args.space)
    backend = _backend(_backend_for_device(args.backend, args.device))
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
    if out.exists():
        table = _load_table(str(out))
        try:
            check_same_setup(table, wanted, out)
        except TableError as e:
            raise UsageError(str(e)) from None
        table.fit["model"] = args.fit_model
    else:
        table = wanted
    tune_allocator()  # the same allocator for entries and whole networks; see nas.cli.tune_allocator
    before = len(table.entries)
    build_table(table, entries, backend, path=out, limit=args.limit, progress=not args.quiet)
    missing = sum(k not in table.entries for k in entries)
    if missing:
        table.save(out)
        print(f"{out}: {len(table.entries)} of {len(entries)} entries ({len(table.entries) - before} measured now); "
              f"rerun the same command to continue")
        return 0
    nets = space_members(space, args.fit_networks, args.seed, resolution, skeleton_first=True)
    try:
        fit_overhead(table, nets, backend, path=out, progress=not args.quiet)
    except TableError as e:  # the measured fit networks are kept: `refit --model constant` needs no measuring
        raise RuntimeFailure(f"{out}: {e}") from None
    table.save(out)
    print(f"{out}: {len(table.entries)} entries, {table.describe()}; fit ({table.fit['model']}) on "
          f"{len(table.fit['networks'])} networks: scale {table.scale:.4f}, overhead {table.overhead * 1e3:.3f} ms")
    return 0


def _validate(args, argv) -> int:
    from ..latency import TableError, check_environment, predict, space_members, validate, write_report

    table = _load_table(args.table)
    if not table.complete:
        raise UsageError(f"{args.table}: the table is incomplete ({len(table.entries)} of {table.expected_entries} "
                         f"entries, overhead {'fitted' if table.overhead is not None else 'not fitted'}); "
                         f"finish it with nas-latency table")
    if args.device is not None:
        wanted = _backend_for_device("torch" if table.backend == "cuda" else table.backend, args.device)
        if wanted != table.backend:
            raise UsageError(f"{args.table}: the table was measured with backend {table.backend!r} on "
                             f"{table.device}, not on --device {args.device}")
    backend = _backend(table.backend)
    try:
        check_environment(table, backend)
    except TableError as e:
        raise UsageError(f"{args.table}: {e}") from None
    space = _space(table.space)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output-dir {out_dir} exists and is not a directory")
    members = space_members(space, args.n, args.seed, table.resolution, skeleton_first=False)
    for spec in members:  # before any measuring: a member with a piece the table lacks means another space
        try:
            predict(spec, table)
        except TableError as e:
            raise UsageError(str(e)) from None
    tune_allocator()
    checkpoint = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = out_dir / ".validate-partial.json"  # rerun the same command to resume
    report = validate(table, members, backend, warmup=args.warmup, runs=args.runs, progress=not args.quiet,
                      checkpoint=checkpoint)
    if out_dir is not None:
        write_report(report, out_dir, "nas-latency " + " ".join(shlex.quote(a) for a in argv))
        checkpoint.unlink(missing_ok=True)
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
    table = _load_table(args.table)
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

    table = _load_table(args.table)
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
    args = _parser().parse_args(argv)
    return {"table": lambda: _table(args), "validate": lambda: _validate(args, argv),
            "predict": lambda: _predict(args), "refit": lambda: _refit(args)}[args.cmd]()


entry = main.entry

if __name__ == "__main__":
    entry()
