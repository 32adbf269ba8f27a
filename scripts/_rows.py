"""Shared by the study scripts: resumable logs (one JSON row per finished job, tagged with its
configuration), a worker pool that hands each finished row over at once, and the rank
statistics the studies report."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np


#: the ground truth's document (scripts/ground_truth.py writes it, the studies read it)
GROUND_TRUTH_FORMAT, GROUND_TRUTH_VERSION = "nas-ground-truth", 1


def read_ground_truth(path: Path) -> dict:
    """``results/ground_truth/table.json`` (or another of its kind), read by the rules of every versioned
    document (:mod:`nas.document`: size limit, strict JSON, format and version checked)."""
    from nas.document import check_format, load_json

    doc = load_json(path)
    check_format(doc, GROUND_TRUTH_FORMAT, GROUND_TRUTH_VERSION)
    return doc


def config_key(config: dict) -> str:
    """A short, stable tag of a configuration (rows of another configuration are ignored)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def read_rows(path: Path) -> Iterator[dict]:
    """The JSON rows of a log written one line per finished job; a torn (unparsable) line is skipped."""
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue


def finished_rows(path: Path, key: str) -> dict[tuple[int, int], dict]:
    """The rows of ``path`` made under ``key``, by (index, seed); a torn last line is skipped."""
    return {(row["index"], row["seed"]): row for row in read_rows(path) if row.get("config") == key}


def run_pool(todo: Sequence, work: Callable, *, workers: int, initializer: Callable, initargs: tuple,
             on_row: Callable[[object, dict], str], total: int, already: int = 0) -> None:
    """``work(job)`` for every job of ``todo`` on ``workers`` forked processes, in order.

    ``on_row(job, row)`` receives each finished row at once (to append it to a log, so that a stop
    loses only the jobs in flight) and returns the progress line's text, printed after
    ``[done/total | elapsed, ETA]``; ``already`` counts the jobs finished before this run.
    """
    import multiprocessing as mp

    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers, initializer, initargs) as pool:
        for finished, (job, row) in enumerate(zip(todo, pool.imap(work, todo)), 1):
            text = on_row(job, row)
            elapsed = time.perf_counter() - t0
            eta = elapsed / finished * (len(todo) - finished)
            print(f"[{already + finished}/{total} | {elapsed / 60:5.1f} min, ETA {eta / 60:5.0f} min] {text}",
                  file=sys.stderr, flush=True)


def ranks(x) -> np.ndarray:
    """Ranks 1..n with ties given their mean rank (as Spearman's rho needs)."""
    x = np.asarray(x, float)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    """Spearman's rank correlation: Pearson's r of the (tie-averaged) ranks."""
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


# Student's t, 0.95 quantile (two-sided 90 %), by degrees of freedom; beyond 10 the value at 10
# (wider than exact, never narrower)
_T90 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833, 10: 1.812}


def t_interval90(values) -> list[float]:
    """A 90 % t-interval of the mean of ``values`` (seeds); [v, v] for one value, NaNs for none."""
    import math

    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return [float(v.mean()), float(v.mean())] if v.size else [math.nan, math.nan]
    half = _T90[min(v.size - 1, 10)] * v.std(ddof=1) / math.sqrt(v.size)
    return [float(v.mean() - half), float(v.mean() + half)]
