"""Seeded, class-stratified draws: which examples a subset, a batch or a held-out split takes."""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import DataRuntimeError, DataUsageError

__all__ = ["check_fraction", "stratified_indices", "stratified_split"]


def stratified_indices(labels: np.ndarray | torch.Tensor, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples drawn per class by a seeded stratified draw.

    Class c receives ``n * n_c / N`` examples rounded down or up (largest
    remainders get the leftover slots, ties broken at random), so every class
    is within one example of its exact share; the examples of each class are a
    seeded random choice. ``n >= len(labels)`` selects everything.
    """
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    total = y.shape[0]
    if n >= total:
        return np.arange(total, dtype=np.int64)
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    share = n * counts / total
    quota = np.floor(share).astype(np.int64)
    leftover = n - int(quota.sum())
    if leftover:
        remainder = share - quota
        ranked = np.lexsort((rng.random(classes.shape[0]), -remainder))
        quota[ranked[:leftover]] += 1
    chosen = [
        rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def check_fraction(val_fraction: float) -> None:
    """Raise :class:`DataUsageError` unless ``0 < val_fraction < 1``."""
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise DataUsageError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val), holding out ``val_fraction`` of each class.

    A class of n >= 2 examples gives ``max(1, round(n * val_fraction))`` to
    val but always keeps one for train; a class of one example stays in train.
    ``label`` names the source in the error raised when nothing can be held out.
    """
    check_fraction(val_fraction)
    rng = np.random.default_rng(seed)
    val_parts: list[np.ndarray] = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        size = members.shape[0]
        if size < 2:
            continue
        k = min(size - 1, max(1, math.floor(size * val_fraction + 0.5)))
        val_parts.append(members[:k])
    if not val_parts:
        raise DataRuntimeError(
            f"{label}: too few images to hold out a validation split (every class has one)"
        )
    val = np.sort(np.concatenate(val_parts))
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).astype(np.int64), val.astype(np.int64)
