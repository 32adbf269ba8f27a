"""``nas-scale --grid-search``: its options and its run (the search itself: :mod:`scaling.training_grid`)."""
from __future__ import annotations

import json
import shlex
import sys

from . import RuntimeFailure, UsageError, finite_float, load_data, non_negative_int, positive_int

__all__ = ["add_grid_arguments", "run_grid"]


def _note(msg: str) -> None:
    print(f"nas-scale: {msg}", file=sys.stderr)


def add_grid_arguments(ap) -> None:
    """The ``grid search`` group of nas-scale's options."""
    g = ap.add_argument_group("grid search")
    g.add_argument("--data", default="sample", help="dataset source (default sample; e.g. fashion-mnist)")
    g.add_argument("--base-resolution", type=int,
                   help="train the base at this resolution (default 16: the search's default estimator, the best "
                        "point of the trust-cost frontier, results/evaluation/trust.json)")
    g.add_argument("--recipe", default=None,
                   help="training recipe (default adamw, as the search's default estimator; efficientnet, resnet)")
    g.add_argument("--epochs", type=finite_float("--epochs", lo=0), default=1.0, help="epochs per candidate (default 1)")
    g.add_argument("--tolerance", type=finite_float("--tolerance", lo=0), default=0.1,
                   help="|alpha*beta^2*gamma^2 - 2| <= tolerance * 2 (default 0.1)")
    g.add_argument("--step", type=finite_float("--step"), default=0.05, help="grid step (default 0.05)")
    g.add_argument("--max-coef", type=finite_float("--max-coef", lo=1), default=1.4, help="largest coefficient (default 1.4)")
    g.add_argument("--max-candidates", type=positive_int("--max-candidates"),
                   help="train at most this many distinct architectures (deterministic even subsample)")
    g.add_argument("--storage", help="Optuna storage URL or journal file (default OUTPUT/grid.journal)")
    g.add_argument("--limit-train", type=positive_int("--limit-train"), help="train images per candidate")
    g.add_argument("--limit-val", type=positive_int("--limit-val"), help="held-out images per candidate")
    g.add_argument("--batch-size", type=positive_int("--batch-size"), default=64)
    g.add_argument("--seed", type=non_negative_int("--seed"), default=0,
                   help="initialisation and order of training (default 0)")
    g.add_argument("--data-seed", type=non_negative_int("--data-seed"), default=0,
                   help="the stratified draw of --limit-train/--limit-val images, made once for every candidate "
                        "and every --seed (default 0)")
    g.add_argument("--threads", type=positive_int("--threads"), help="torch CPU threads")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def run_grid(base, args, argv) -> int:
    """Plan, load the data, train every candidate (scaling.training_grid), write grid.json and grid.png."""
    from scaling.compound import ScalingError
    from scaling.grid import GridError, write_results
    from scaling.training_grid import plan_grid, train_grid

    try:
        plan = plan_grid(base, base_resolution=args.base_resolution, recipe=args.recipe, output=args.output,
                         step=args.step, max_coef=args.max_coef, tolerance=args.tolerance)
    except GridError as e:
        raise UsageError(str(e)) from None
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(args.data, seed=args.data_seed)
    try:
        result = train_grid(plan, data, data_source=args.data, epochs=args.epochs, batch_size=args.batch_size,
                            seed=args.seed, data_seed=args.data_seed, limit_train=args.limit_train,
                            limit_val=args.limit_val, storage=args.storage, max_candidates=args.max_candidates,
                            progress=not args.quiet, log=_note)
    except (GridError, ScalingError) as e:
        raise UsageError(str(e)) from None
    if result.info.get("subsampled"):
        _note(result.info["note"])
    cmd = "nas-scale " + shlex.join(list(argv if argv is not None else sys.argv[1:]))
    paths = write_results(result, plan.output, command=cmd)
    if result.best is None:
        raise RuntimeFailure(f"every candidate failed; see {paths[0]}")
    b = result.best
    _note(f"best alpha={b['alpha']:g} beta={b['beta']:g} gamma={b['gamma']:g} (accuracy {b['accuracy']:.4f}); "
          f"wrote {', '.join(str(p) for p in paths)}")
    sys.stdout.write(json.dumps(result.best) + "\n")
    return 0
