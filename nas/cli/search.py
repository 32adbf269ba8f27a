"""``nas-search --target-flops 400M``: MnasNet-style architecture search (see :mod:`nas.search`).

Every input is validated before anything is created; the output folder gets the
study (a journal file, unless ``--storage``), best.json, trials.csv,
summary.json and pareto.png.  Rerunning the same command resumes.  Ctrl-C
writes the outputs for the best so far and exits 130.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

from . import (ArgumentParser, RuntimeFailure, UsageError, command, load_data, non_negative_int, parse_quantity,
               tune_allocator)
from ..recipes import RECIPE_NAMES

DEFAULT_TRAIN_WORKERS = 2  # local worker processes by default when the estimator trains


def _parser() -> ArgumentParser:
    from ..samplers import DEFAULT_STRATEGY, STRATEGY_NAMES
    from ..search import DEFAULT_BUDGET, TRAIN_BUDGET

    ap = ArgumentParser(prog="nas-search", description="Search the MnasNet factorized space for the best "
                        "ACC*(C/T)^w under a FLOPs or latency target.")
    t = ap.add_argument_group("target (exactly one)")
    t.add_argument("--target-flops", metavar="N", help="FLOPs target at the spec's resolution: 400M, 0.4G, 4e8")
    t.add_argument("--target-latency", metavar="T", help="measured batch-1 latency target: 20ms, 0.02")
    ap.add_argument("--constraint", default="absolute",
                    help="absolute (TuNAS: ACC + beta*|C/T - 1|, default), soft (MnasNet: alpha=beta=-0.07) "
                         "or hard (MnasNet: alpha=0, beta=-1)")
    ap.add_argument("--w", type=float, help="absolute: its beta (< 0); soft/hard: the exponent overriding alpha and beta")
    ap.add_argument("--latency-table", metavar="TABLE",
                    help="--target-latency: predict each candidate's latency from this nas-latency table "
                         "instead of measuring it")
    ap.add_argument("--strategy", default=DEFAULT_STRATEGY,
                    help=f"one of {', '.join(STRATEGY_NAMES)} (default {DEFAULT_STRATEGY})")
    ap.add_argument("--budget", type=int, default=None,
                    help=f"complete trials (default {TRAIN_BUDGET} with --estimator train, {DEFAULT_BUDGET} with a proxy)")
    ap.add_argument("--seed", type=non_negative_int("--seed"), default=0)
    # --evaluator: the flag's first name, kept as an alias
    ap.add_argument("--estimator", "--evaluator", dest="estimator", default=None,
                    help="train (default: 1 epoch at 16 px) or proxy[:NAME] (proxy = proxy:synflow)")
    ap.add_argument("--data", default="sample", help="dataset for the estimator (default: the embedded sample)")
    ap.add_argument("--epochs", type=float, default=None,
                    help="training epochs per trial (--estimator train; default 1)")
    ap.add_argument("--recipe", choices=RECIPE_NAMES, default=None,
                    help="training recipe per trial (--estimator train; default adamw, see nas-train)")
    ap.add_argument("--limit-train", type=int, help="train on at most N images per epoch (--estimator train)")
    ap.add_argument("--limit-val", type=int, help="evaluate on at most N held-out images (--estimator train)")
    ap.add_argument("--resolution", type=int, help="estimator resolution (default: train 16, proxy 32)")
    ap.add_argument("--device", help="where --estimator train trains: auto, cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--space", default="mnasnet-b0", help="search space (mnasnet-b0, mnasnet-mbv2)")
    ap.add_argument("--storage", help="Optuna storage URL (default: a journal file in the output folder)")
    ap.add_argument("--study-name", help="study name (default derived from the settings)")
    ap.add_argument("--output", help="output folder (default runs/<time>-<strategy>-s<seed>)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for estimating (default 1)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    # scale-out (nas.search.workers, nas.search.ray_backend; issue 7)
    so = ap.add_argument_group("scale-out")
    so.add_argument("--workers", type=int, metavar="N", help="concurrent trials: N local processes on one study "
                    "(default 2 with --estimator train, else 1), or N concurrent Ray trials (--backend ray; default: as many as the CPUs allow)")
    so.add_argument("--backend", default="local", help="local (default) or ray (Ray Tune)")
    so.add_argument("--address", metavar="ADDR", help="an existing Ray cluster (--backend ray): auto, HOST:PORT, "
                    "ray://HOST:10001")
    so.add_argument("--cpus-per-trial", type=float, default=1.0, metavar="C",
                    help="CPUs Ray reserves per trial (--backend ray; default 1)")
    return ap


def _check_writable(folder: Path) -> None:
    """The folder (or its nearest existing parent) must be a writable directory; creates nothing."""
    p = folder
    if p.exists() and not p.is_dir():
        raise UsageError(f"--output {folder} exists and is not a folder")
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise UsageError(f"--output {folder}: {p} is not a writable folder")


def _check_supernet(directory: str) -> None:
    """A trained supernet's folder (nas-supernet train --output DIR); its content is checked when it loads."""
    if not directory:
        raise UsageError("--estimator supernet:DIR needs the folder of a trained supernet (nas-supernet train)")
    if not Path(directory).is_dir():
        raise UsageError(f"--estimator supernet:{directory}: no such folder (train one with nas-supernet train)")


def _check_latency_table(path: str, space_name: str, target: float) -> str:
    """The table's absolute path, once it loads, covers the space, fits this machine and can reach the target."""
    from search_spaces import SPACES

    from ..latency import LatencyTable, TableError, fastest_member, predict

    try:
        table = LatencyTable.load(path)
    except TableError as e:
        raise UsageError(f"--latency-table: {e}") from None
    if table.space != space_name:
        raise UsageError(f"--latency-table {path} is for space {table.space}, not {space_name}")
    if not table.complete:
        raise UsageError(f"--latency-table {path} is incomplete: rerun nas-latency table to finish it")
    fastest = predict(fastest_member(SPACES[space_name], table), table)
    if target < fastest:
        raise UsageError(f"--target-latency {target * 1e3:g} ms is below the fastest member of {space_name} "
                         f"({fastest * 1e3:.2f} ms predicted by {path})")
    return str(Path(path).resolve())


def parse_config(argv):
    """argv -> (SearchConfig, output folder); raises UsageError on any bad input, creates nothing."""
    from ..search import EstimatorConfig, LatencyConfig, SearchConfig, StorageConfig, default_budget

    args = _parser().parse_args(argv)
    if (args.target_flops is None) == (args.target_latency is None):
        raise UsageError("give exactly one of --target-flops and --target-latency")
    if args.target_flops is not None:
        metric, target = "flops", parse_quantity(args.target_flops)
    else:
        metric, target = "latency", parse_quantity(args.target_latency, unit="s")
    if not target > 0:
        raise UsageError(f"the target must be > 0, got {args.target_flops or args.target_latency}")
    from ..reward import CONSTRAINTS

    if args.constraint not in CONSTRAINTS:
        raise UsageError(f"--constraint must be one of {', '.join(CONSTRAINTS)}, got {args.constraint!r}")
    if args.w is not None and not math.isfinite(args.w):
        raise UsageError(f"--w must be a finite number, got {args.w}")
    if args.constraint == "absolute" and args.w is not None and not args.w < 0:
        raise UsageError(f"--w is the absolute reward's beta and must be < 0 (a penalty), got {args.w:g}")
    latency = {}
    if args.latency_table is not None:
        if metric != "latency":
            raise UsageError("--latency-table needs --target-latency")
        latency["table"] = _check_latency_table(args.latency_table, args.space, target)
    from ..samplers import STRATEGIES

    if args.strategy not in STRATEGIES:
        raise UsageError(f"unknown strategy {args.strategy!r}; strategies: {', '.join(STRATEGIES)}")
    from ..estimators import DEFAULT_ESTIMATOR, DEFAULT_PROXY, ESTIMATORS, estimator_options

    est = args.estimator or DEFAULT_ESTIMATOR
    if est == "proxy":
        est = DEFAULT_PROXY
    if args.budget is None:
        args.budget = default_budget(est)
    if args.budget <= 0:
        raise UsageError(f"--budget must be > 0, got {args.budget}")
    if est.startswith("supernet:"):
        _check_supernet(est.split(":", 1)[1])
    elif est != "supernet" and est not in ESTIMATORS:
        raise UsageError(f"unknown estimator {est!r}; estimators: proxy, supernet, supernet:DIR, "
                         f"{', '.join(ESTIMATORS)}")
    if args.epochs is not None and not (args.epochs > 0 and math.isfinite(args.epochs)):
        raise UsageError(f"--epochs must be > 0, got {args.epochs}")
    for flag, v in (("--limit-train", args.limit_train), ("--limit-val", args.limit_val)):
        if v is not None and v < 2:
            raise UsageError(f"{flag} must be >= 2, got {v}")
    if args.resolution is not None and not 8 <= args.resolution <= 1024:
        raise UsageError(f"--resolution must be in [8, 1024], got {args.resolution}")
    if not 1 <= args.threads <= 256:
        raise UsageError(f"--threads must be in [1, 256], got {args.threads}")
    from search_spaces import SPACES

    if args.space not in SPACES:
        raise UsageError(f"unknown space {args.space!r}; spaces: {', '.join(SPACES)}")
    if args.storage is not None and "://" not in args.storage:
        raise UsageError(f"--storage must be an Optuna storage URL (e.g. sqlite:///study.db), got {args.storage!r}")
    # only the options given reach the estimator (its own defaults fill the rest); one it does not take is an error
    if args.device is not None:
        from ..devices import DeviceError, resolve_device

        try:
            resolve_device(args.device)
        except DeviceError as e:
            raise UsageError(f"--device: {e}") from None
    given = {"epochs": args.epochs, "recipe": args.recipe, "resolution": args.resolution,
             "limit_train": args.limit_train, "limit_val": args.limit_val, "device": args.device}
    options = {k: v for k, v in given.items() if v is not None}
    takes = estimator_options("supernet:" if est == "supernet" else est)
    for k in options:
        if k not in takes:
            flags = ", ".join("--" + o.replace("_", "-") for o in takes if o in given) or "none of these"
            raise UsageError(f"--{k.replace('_', '-')} does not apply to --estimator {est} (it takes {flags})")
    output = Path(args.output or f"runs/{time.strftime('%Y%m%d-%H%M%S')}-{args.strategy}-s{args.seed}")
    _check_writable(output)
    if est == "supernet":  # trained into the run folder first (train_run_supernet); the study names that folder
        est = f"supernet:{output / 'supernet'}"
    cfg = SearchConfig(target=target, metric=metric, constraint=args.constraint, w=args.w, strategy=args.strategy,
                       budget=args.budget, seed=args.seed, space=args.space,
                       estimator=EstimatorConfig(name=est, data=args.data, options=options),
                       storage=StorageConfig(url=args.storage, study_name=args.study_name, output=str(output)),
                       latency=LatencyConfig(**latency))
    return cfg, output, not args.no_progress, args.threads


def parse_scale_out(argv, cfg) -> dict:
    """--workers/--backend/--address/--cpus-per-trial -> how to run the trials; creates nothing."""
    args = _parser().parse_args(argv)
    if args.backend not in ("local", "ray"):
        raise UsageError(f"--backend must be local or ray, got {args.backend!r}")
    if args.workers is not None and not 1 <= args.workers <= 1024:
        raise UsageError(f"--workers must be in [1, 1024], got {args.workers}")
    if not (math.isfinite(args.cpus_per_trial) and 0 < args.cpus_per_trial <= 1024):
        raise UsageError(f"--cpus-per-trial must be in (0, 1024], got {args.cpus_per_trial}")
    if args.backend == "local" and (args.address is not None or args.cpus_per_trial != 1.0):
        raise UsageError("--address and --cpus-per-trial need --backend ray")
    if args.backend == "local" and (args.workers or 1) > 1 and (cfg.storage.url or "").startswith("sqlite"):
        raise UsageError("--workers > 1 with SQLite storage is unsafe (concurrent writers); use the default journal "
                         "file or a database server URL")
    if args.backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError("--backend ray needs Ray: pip install 'ray[tune]'")
    workers = args.workers
    if workers is None and args.backend == "local" and cfg.estimator.name == "train" and not cfg.storage.url:
        # training is the slow estimator and keeps one core busy per trial: use both cores of a
        # 2-core machine by default (the default search's 10-minute budget, results/search/)
        workers = max(1, min(DEFAULT_TRAIN_WORKERS, os.cpu_count() or 1))
    return {"backend": args.backend, "workers": workers, "address": args.address,
            "cpus_per_trial": args.cpus_per_trial}


def _run(session, progress: bool, scale: dict, threads: int, started: float):
    """The trials of ``session``, by the backend ``scale`` names (same result type, same outputs)."""
    if scale["backend"] == "ray":
        from ..search.ray_backend import run_ray

        return run_ray(session, workers=scale["workers"], address=scale["address"],
                       cpus_per_trial=scale["cpus_per_trial"], threads=max(threads, int(scale["cpus_per_trial"])),
                       started=started)
    if (scale["workers"] or 1) > 1:
        from ..search.workers import run_workers

        return run_workers(session, scale["workers"], progress=progress, threads=threads, started=started)
    from ..search import run_local

    return run_local(session, progress=progress, started=started)


def train_run_supernet(cfg, dataset, folder: Path, *, progress: bool, threads: int) -> None:
    """``--estimator supernet``: train (or resume, or reuse) the run's own supernet with the stated budget.

    :data:`nas.supernet.SEARCH_SUPERNET` (4 epochs at 28 px on at most 10,000 images of ``--data``),
    on every CPU core (nothing else runs yet), on ``--device`` where one is given.
    """
    import torch

    from ..supernet import SEARCH_SUPERNET, SupernetError, TrainConfig, read_checkpoint, resolve_device, train_supernet

    if (folder / "supernet.pt").exists():
        try:
            if read_checkpoint(folder)["complete"]:
                return
        except SupernetError as e:
            raise RuntimeFailure(str(e)) from None
    tc = TrainConfig(space=cfg.space, data=cfg.estimator.data, seed=cfg.seed, **SEARCH_SUPERNET)
    print(f"nas-search: training the run's supernet first ({tc.epochs} epochs at {tc.resolution} px on at most "
          f"{tc.limit_train} images of {cfg.estimator.data}) into {folder}; rerun to resume", file=sys.stderr)
    device = resolve_device(cfg.estimator.options.get("device", "cpu"))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(threads, min(os.cpu_count() or 1, 8)))
    try:
        train_supernet(tc, dataset, folder, device=str(device), progress=progress)
    except SupernetError as e:
        raise RuntimeFailure(str(e)) from None
    finally:
        torch.set_num_threads(previous)


@command("nas-search")
def main(argv=None) -> int:
    cfg, output, progress, threads = parse_config(argv)
    scale = parse_scale_out(argv, cfg)
    dataset = load_data(cfg.estimator.data, seed=cfg.seed)
    # as nas-latency and the study scripts do: measured latency (--target-latency) must be
    # measured as latency tables are (B0 took 38 ms with glibc's defaults, 32 ms tuned, on this machine)
    tune_allocator()
    import torch

    # One thread by default: on this shared 2-core machine two threads were 5-10x
    # *slower* (synflow 0.25 s vs 1.2-3.9 s per candidate; a B0 training step at
    # 16 px, batch 64: 1.4 s vs 8.6 s), the small tensors of a search being all overhead.
    torch.set_num_threads(threads)
    from ..search import open_session, summary_text, write_outputs

    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.estimator.name == f"supernet:{output / 'supernet'}":
        train_run_supernet(cfg, dataset, output / "supernet", progress=progress, threads=threads)
    try:
        session = open_session(cfg, output=output, dataset=dataset, log=lambda m: print(m, file=sys.stderr))
        res = _run(session, progress, scale, threads, started)
    except (ValueError, RuntimeError, ConnectionError) as e:  # a study with other directions, a worker failed, ...
        raise RuntimeFailure(" ".join(str(e).split())[:500] or type(e).__name__) from None
    if cfg.latency.table and res.best is not None and not res.interrupted:
        from ..latency import LatencyTable, measure_as_table
        from ..search import best_spec

        res.extra["best_latency_measured"] = measure_as_table(best_spec(res), LatencyTable.load(cfg.latency.table))
    write_outputs(res, output, weights=getattr(session.estimator, "state_dict", None))
    sys.stdout.write(summary_text(res) + f"\noutputs: {output}\n")
    if res.interrupted:
        print("nas-search: interrupted; outputs hold the best so far (rerun the same command to resume)",
              file=sys.stderr)
        return 130
    return 0


entry = main.entry
