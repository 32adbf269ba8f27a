"""``nas-search``'s arguments: the parser, and argv -> a checked :class:`nas.search.SearchConfig` and the
scale-out settings (every input validated before anything is created)."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from . import ArgumentParser, UsageError, non_negative_int, parse_quantity
from ..recipes import RECIPE_NAMES

__all__ = ["parse_config", "parse_scale_out"]


def _parser() -> ArgumentParser:
    from ..samplers import DEFAULT_STRATEGY, STRATEGY_NAMES
    from ..search import DEFAULT_BUDGET, TRAIN_BUDGET

    ap = ArgumentParser(prog="nas-search", description="Search the MnasNet factorized space for the best "
                        "ACC*(C/T)^w under a FLOPs or latency target.")
    t = ap.add_argument_group("target (exactly one; none with a benchmark estimator: maximize its accuracy)")
    t.add_argument("--target-flops", metavar="N", help="FLOPs target at the spec's resolution: 400M, 0.4G, 4e8")
    t.add_argument("--flops-convention", default="fvcore", metavar="NAME",
                   help="what FLOPs count: fvcore (default: conv, linear, BN, pooling) or conv-linear "
                        "(convolutions and linear layers only, as NAS-Bench-Macro's table)")
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
                    help="train (default: 1 epoch at 16 px), proxy[:NAME] (proxy = proxy:synflow), or "
                         "nas-bench-macro[:sample] (a lookup in NAS-Bench-Macro's table; --space nas-bench-macro)")
    ap.add_argument("--data", default="sample", help="dataset for the estimator (default: the embedded sample)")
    ap.add_argument("--epochs", type=float, default=None,
                    help="training epochs per trial (--estimator train; default 1)")
    ap.add_argument("--recipe", choices=RECIPE_NAMES, default=None,
                    help="training recipe per trial (--estimator train; default adamw, see nas-train)")
    ap.add_argument("--limit-train", type=int, help="train on at most N images per epoch (--estimator train)")
    ap.add_argument("--limit-val", type=int, help="evaluate on at most N held-out images (--estimator train)")
    ap.add_argument("--resolution", type=int, help="estimator resolution (default: train 16, proxy 32)")
    ap.add_argument("--device", help="where --estimator train trains: auto, cpu, cuda or cuda:N (default cpu)")
    ap.add_argument("--space", default="mnasnet-b0", help="search space (mnasnet-b0, mnasnet-mbv2, nas-bench-macro)")
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


def _check_latency_table(path: str, space_name: str, target: float):
    """The table, loaded once (the search reuses it), if it covers the space, fits this machine and can reach
    the target; a usage error otherwise."""
    from ..latency import TableError
    from ..search.run import LatencyTableMismatch, LatencyTargetError, check_latency_table

    try:
        return check_latency_table(path, space_name, target)
    except TableError as e:
        raise UsageError(f"--latency-table: {e}") from None
    except LatencyTableMismatch as e:
        raise UsageError(f"--latency-table {e}") from None
    except LatencyTargetError as e:
        raise UsageError(f"--target-latency {e}") from None


def parse_config(argv):
    """argv -> (SearchConfig, output folder, progress, threads, the loaded --latency-table or None);
    raises UsageError on any bad input, creates nothing."""
    from ..search import EstimatorConfig, LatencyConfig, SearchConfig, StorageConfig, default_budget

    args = _parser().parse_args(argv)
    from ..cost import FLOP_CONVENTIONS
    from ..estimators.benchmark import benchmark_estimators

    if args.flops_convention not in FLOP_CONVENTIONS:
        raise UsageError(f"--flops-convention must be one of {', '.join(FLOP_CONVENTIONS)}, "
                         f"got {args.flops_convention!r}")
    if args.target_flops is not None and args.target_latency is not None:
        raise UsageError("give exactly one of --target-flops and --target-latency")
    if args.target_flops is None and args.target_latency is None:
        if args.estimator not in benchmark_estimators():  # a lookup: no target means maximize its accuracy
            raise UsageError("give exactly one of --target-flops and --target-latency (none only with a "
                             f"benchmark estimator: {', '.join(benchmark_estimators())})")
        metric, target = "flops", None
    elif args.target_flops is not None:
        metric, target = "flops", parse_quantity(args.target_flops)
    else:
        metric, target = "latency", parse_quantity(args.target_latency, unit="s")
    if target is not None and not target > 0:
        raise UsageError(f"the target must be > 0, got {args.target_flops or args.target_latency}")
    from ..reward import CONSTRAINTS

    if args.constraint not in CONSTRAINTS:
        raise UsageError(f"--constraint must be one of {', '.join(CONSTRAINTS)}, got {args.constraint!r}")
    if args.w is not None and not math.isfinite(args.w):
        raise UsageError(f"--w must be a finite number, got {args.w}")
    if args.constraint == "absolute" and args.w is not None and not args.w < 0:
        raise UsageError(f"--w is the absolute reward's beta and must be < 0 (a penalty), got {args.w:g}")
    latency, table = {}, None
    if args.latency_table is not None:
        if metric != "latency":
            raise UsageError("--latency-table needs --target-latency")
        table = _check_latency_table(args.latency_table, args.space, target)
        latency["table"] = str(Path(args.latency_table).resolve())
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
                       budget=args.budget, seed=args.seed, space=args.space, flops_convention=args.flops_convention,
                       estimator=EstimatorConfig(name=est, data=args.data, options=options),
                       storage=StorageConfig(url=args.storage, study_name=args.study_name, output=str(output)),
                       latency=LatencyConfig(**latency))
    return cfg, output, not args.no_progress, args.threads, table


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
        from ..search.run import DEFAULT_TRAIN_WORKERS

        workers = max(1, min(DEFAULT_TRAIN_WORKERS, os.cpu_count() or 1))
    return {"backend": args.backend, "workers": workers, "address": args.address,
            "cpus_per_trial": args.cpus_per_trial}
