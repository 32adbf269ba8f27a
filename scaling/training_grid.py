"""The grid search for (alpha, beta, gamma) with training as its evaluator (``nas-scale --grid-search``).

:func:`plan_grid` checks everything that can be checked before torch, the data or the
output folder are touched (a :class:`scaling.grid.GridError` names the bad setting);
:func:`train_grid` trains every candidate with :func:`nas.train.train_and_evaluate` on
one draw of the data through :func:`scaling.grid.run_grid_search`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nas.spec import MAX_RESOLUTION, Spec, min_resolution, total_stride

from .grid import GridError, GridResult, grid_points, run_grid_search

__all__ = ["GridPlan", "plan_grid", "train_grid", "DEFAULT_OUTPUT"]

DEFAULT_OUTPUT = "results/scaling"


@dataclass(frozen=True)
class GridPlan:
    base: Spec  # at the resolution its candidates train at
    recipe: str
    points: int  # (alpha, beta, gamma) points on the grid
    output: Path
    step: float
    max_coef: float
    tolerance: float


def plan_grid(base: Spec, *, base_resolution: int | None = None, recipe: str | None = None,
              output: str | Path | None = None, step: float = 0.05, max_coef: float = 1.4,
              tolerance: float = 0.1) -> GridPlan:
    """The checked settings of a grid search; defaults: the search's default estimator's resolution and
    recipe (the frontier's best point within a grid's budget), output ``results/scaling``."""
    from nas.estimators import TRAIN_RECIPE, TRAIN_RESOLUTION
    from nas.train import RECIPES

    n_points = len(grid_points(step=step, max_coef=max_coef, tolerance=tolerance))
    resolution = TRAIN_RESOLUTION if base_resolution is None else base_resolution
    recipe = recipe or TRAIN_RECIPE
    if recipe not in RECIPES:
        raise GridError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    if not 1 <= resolution <= MAX_RESOLUTION:
        raise GridError(f"--base-resolution must be in [1, {MAX_RESOLUTION}], got {resolution}")
    base = base.replace(resolution=resolution)
    if base.resolution < min_resolution(base):
        raise GridError(f"--base-resolution {base.resolution} is too small for this network (total stride "
                        f"{total_stride(base)}); use at least {min_resolution(base)}")
    out = Path(output or DEFAULT_OUTPUT)
    if out.exists() and not out.is_dir():
        raise GridError(f"--output {out} exists and is not a folder")
    return GridPlan(base, recipe, n_points, out, step, max_coef, tolerance)


def train_grid(plan: GridPlan, data, *, data_source: str, epochs: float = 1.0, batch_size: int = 64,
               seed: int = 0, data_seed: int = 0, limit_train: int | None = None, limit_val: int | None = None,
               storage=None, max_candidates: int | None = None, progress: bool = True,
               log: Callable[[str], None] | None = None) -> GridResult:
    """Train every candidate of ``plan`` on ``data`` (loaded with ``data_seed``; ``data_source`` names it).

    The images are drawn once, with ``data_seed``, as the ground truth draws them: ``seed`` then changes
    only the initialisation and the order, so two seeds of one candidate differ by training noise alone.
    """
    from nas.train import train_and_evaluate

    log = log or (lambda s: None)
    if limit_train is not None or limit_val is not None:
        data = data.subset(limit_train or data.num_train, limit_val, seed=data_seed)
    budget = {"data": data_source, "epochs": epochs, "batch_size": batch_size, "limit_train": limit_train,
              "limit_val": limit_val, "data_seed": data_seed, "seed": seed, "recipe": plan.recipe}

    def evaluate(spec):
        return train_and_evaluate(spec, data, epochs=epochs, batch_size=batch_size, seed=seed, recipe=plan.recipe)

    log(f"grid: {plan.points} (alpha, beta, gamma) points with |alpha*beta^2*gamma^2 - 2| <= {plan.tolerance:g} x 2; "
        f"base {plan.base.name} at {plan.base.resolution} px; {data_source}, {epochs:g} epoch(s), "
        f"limit_train={limit_train}")
    return run_grid_search(plan.base, evaluate, storage=storage, output_dir=plan.output, step=plan.step,
                           max_coef=plan.max_coef, tolerance=plan.tolerance, max_candidates=max_candidates,
                           budget=budget, progress=progress, log=log)
