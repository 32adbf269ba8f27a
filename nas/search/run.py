"""What ``nas-search`` does around a session: check a latency table against the search, train the
run's own supernet, run the trials on the chosen backend, measure the best as its table was measured.

Each raises a library error (:class:`nas.latency.TableError`, :class:`LatencyTargetError`,
:class:`nas.supernet.SupernetError`, ...); the command turns them into one line and an exit code.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

__all__ = ["LatencyTableMismatch", "LatencyTargetError", "check_latency_table", "train_run_supernet", "run_trials",
           "measure_best", "DEFAULT_TRAIN_WORKERS"]

DEFAULT_TRAIN_WORKERS = 2  # local worker processes by default when the estimator trains


class LatencyTableMismatch(ValueError):
    """The table does not fit the search (another space, unfinished); the message starts with its path."""


class LatencyTargetError(ValueError):
    """The latency target is below the space's fastest member; the message starts with the target."""


def check_latency_table(path: str, space_name: str, target: float):
    """The table at ``path``, loaded once (:class:`nas.latency.TableError` when it does not load) and checked:
    it covers ``space_name``, is complete, and its fastest member can reach ``target`` seconds."""
    from search_spaces import SPACES

    from ..latency import LatencyTable, fastest_member, predict

    table = LatencyTable.load(path)
    if table.space != space_name:
        raise LatencyTableMismatch(f"{path} is for space {table.space}, not {space_name}")
    if not table.complete:
        raise LatencyTableMismatch(f"{path} is incomplete: rerun nas-latency table to finish it")
    fastest = predict(fastest_member(SPACES[space_name], table), table)
    if target < fastest:
        raise LatencyTargetError(f"{target * 1e3:g} ms is below the fastest member of {space_name} "
                                 f"({fastest * 1e3:.2f} ms predicted by {path})")
    return table


def train_run_supernet(cfg, dataset, folder: Path, *, progress: bool, threads: int,
                       log: Callable[[str], None]) -> None:
    """``--estimator supernet``: train (or resume, or reuse) the run's own supernet with the stated budget.

    :data:`nas.supernet.SEARCH_SUPERNET` (4 epochs at 28 px on at most 10,000 images of ``--data``),
    on every CPU core (nothing else runs yet), on ``--device`` where one is given.
    """
    import torch

    from ..supernet import SEARCH_SUPERNET, TrainConfig, read_checkpoint, resolve_device, train_supernet

    if (folder / "supernet.pt").exists() and read_checkpoint(folder)["complete"]:
        return
    tc = TrainConfig(space=cfg.space, data=cfg.estimator.data, seed=cfg.seed, **SEARCH_SUPERNET)
    log(f"training the run's supernet first ({tc.epochs} epochs at {tc.resolution} px on at most "
        f"{tc.limit_train} images of {cfg.estimator.data}) into {folder}; rerun to resume")
    device = resolve_device(cfg.estimator.options.get("device", "cpu"))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(threads, min(os.cpu_count() or 1, 8)))
    try:
        train_supernet(tc, dataset, folder, device=str(device), progress=progress)
    finally:
        torch.set_num_threads(previous)


def run_trials(session, *, backend: str = "local", workers: int | None = None, address: str | None = None,
               cpus_per_trial: float = 1.0, progress: bool = True, threads: int = 1, started: float | None = None):
    """The trials of ``session``, by ``backend`` (same result type, same outputs): Ray Tune, ``workers``
    local processes, or this process."""
    if backend == "ray":
        from .ray_backend import run_ray

        return run_ray(session, workers=workers, address=address, cpus_per_trial=cpus_per_trial,
                       threads=max(threads, int(cpus_per_trial)), started=started)
    if (workers or 1) > 1:
        from .workers import run_workers

        return run_workers(session, workers, progress=progress, threads=threads, started=started)
    from .engine import run_local

    return run_local(session, progress=progress, started=started)


def measure_best(res, table) -> float:
    """The best architecture's latency measured as ``table`` was (what its predictions are checked against)."""
    from ..latency import measure_as_table
    from .outputs import best_spec

    return measure_as_table(best_spec(res), table)
