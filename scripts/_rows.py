"""Shared by the study scripts: resumable logs (one JSON row per finished job, tagged with its
configuration) and the rank statistics the studies report."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def config_key(config: dict) -> str:
    """A short, stable tag of a configuration (rows of another configuration are ignored)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def finished_rows(path: Path, key: str) -> dict[tuple[int, int], dict]:
    """The rows of ``path`` made under ``key``, by (index, seed); a torn last line is skipped."""
    done: dict[tuple[int, int], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("config") == key:
                done[(row["index"], row["seed"])] = row
    return done


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
