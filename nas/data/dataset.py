"""The in-memory :class:`Dataset` every source produces, and the :class:`Loader` over it.

* Images are stored as ``torch.uint8`` tensors ``[N, C, H, W]`` and labels as
  ``torch.int64`` ``[N]``; everything lives in memory (the data is small).
* :meth:`Dataset.loader` yields ``float32`` batches ``[B, channels, res, res]``
  normalized with per-channel mean/std of the *train* split (computed at the
  native resolution after channel adaptation, so every resolution and both
  splits share one normalization). Grey images become N channels by
  repetition, colour images become 1 channel by averaging. Resizing uses
  ``torch.nn.functional.interpolate`` (bilinear, antialiased when shrinking)
  and is done once per (split, resolution, channels, selection) and cached as
  a float tensor, unless that tensor would exceed :data:`CACHE_LIMIT_BYTES`,
  in which case batches are resized on the fly.
* Everything is deterministic given the seeds. ``limit=N``,
  :meth:`Dataset.batch` and :meth:`Dataset.subset` draw N examples with
  :func:`~nas.data.sampling.stratified_indices`.
* Invalid arguments to :class:`Dataset` and its methods raise ``ValueError``
  (a programming error, not a data problem).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .sampling import stratified_indices

__all__ = ["CACHE_LIMIT_BYTES", "SPLITS", "Dataset", "Loader", "from_arrays"]

CACHE_LIMIT_BYTES = 2 * 1024**3
"""Largest resized float tensor a loader caches; above it, it resizes per batch."""

SPLITS = ("train", "val")

_CHUNK = 2048  # images converted at once when caching / computing statistics


@dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory labelled image dataset with a train and a held-out val split.

    Attributes:
        name: the source it came from (e.g. ``"sample"``, ``"idx:/data/mnist"``).
        classes: class names; label ``i`` is ``classes[i]``.
        train_x, val_x: ``torch.uint8`` images ``[N, C, H, W]``.
        train_y, val_y: ``torch.int64`` labels ``[N]``.
        train_soft: optional ``float32`` targets ``[N, classes]`` of the train split (rows are
            probability vectors, e.g. a teacher's pseudo-labels); when present the train
            split's loaders yield them instead of ``train_y`` (which then holds their argmax,
            used for stratified draws).  Made by :meth:`with_train`.
    """

    name: str
    classes: list[str]
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
    train_soft: torch.Tensor | None = field(default=None, repr=False)
    _cache: dict[tuple[Any, ...], Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", [str(c) for c in self.classes])
        if not self.classes:
            raise ValueError("a dataset needs at least one class")
        for split in SPLITS:
            x, y = self._split(split)
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{split}_x must be a uint8 tensor [N, C, H, W]")
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"{split}_y must be an int64 tensor [N] matching {split}_x")
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(f"{split}_y holds labels outside 0..{len(self.classes) - 1}")
        if self.train_x.shape[0] == 0:
            raise ValueError("the train split is empty")
        soft = self.train_soft
        if soft is not None and (soft.dtype != torch.float32 or soft.shape != (self.num_train, len(self.classes))):
            raise ValueError("train_soft must be a float32 tensor [N, classes] matching train_x")
        if self.val_x.shape[0] and self.val_x.shape[1:] != self.train_x.shape[1:]:
            raise ValueError("train_x and val_x must have the same [C, H, W]")

    def with_train(self, train_x: torch.Tensor, train_y: torch.Tensor, train_soft: torch.Tensor | None = None,
                   name: str | None = None) -> Dataset:
        """A dataset with another train split, this held-out split, and this dataset's normalization.

        Normalization is kept (not recomputed from the new images), so that a model trained on one
        dataset sees the same inputs on the other: a teacher trained on a labeled subset, the
        unlabeled images it pseudo-labels and the student's mix all share one preprocessing.
        ``train_x`` must have this dataset's ``[C, H, W]``.
        """
        out = Dataset(name=name or self.name, classes=list(self.classes), train_x=train_x, train_y=train_y,
                      val_x=self.val_x, val_y=self.val_y, train_soft=train_soft)
        if out.train_x.shape[1:] != self.train_x.shape[1:]:
            raise ValueError(f"train_x must be [N, {', '.join(map(str, self.train_x.shape[1:]))}], "
                             f"got {list(train_x.shape)}")
        for stored in {1, self.in_channels}:
            out._cache[("stats", stored)] = self._stats(stored)
        return out

    # -- description ------------------------------------------------------- #

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Channels of the stored images (1 grey, 3 RGB)."""
        return int(self.train_x.shape[1])

    @property
    def resolution(self) -> int:
        """Native resolution: the stored image height H."""
        return int(self.train_x.shape[2])

    @property
    def native_resolution(self) -> int:
        """Alias of :attr:`resolution`."""
        return self.resolution

    @property
    def image_size(self) -> tuple[int, int]:
        """Stored (H, W)."""
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.val_x.shape[0])

    def summary(self) -> str:
        """One line describing the dataset, for logs."""
        h, w = self.image_size
        return (
            f"{self.name}: {self.num_train} train + {self.num_val} val images, "
            f"{self.num_classes} classes, {self.in_channels}x{h}x{w}"
        )

    def __repr__(self) -> str:
        return f"Dataset({self.summary()})"

    # -- normalization ----------------------------------------------------- #

    def normalization(self, channels: int | None = None) -> tuple[list[float], list[float]]:
        """Per-channel (mean, std) of the train split, in [0, 1] units, for ``channels`` outputs.

        Computed at the native resolution after channel adaptation (grey
        repeated, colour averaged to grey).
        """
        channels = self.in_channels if channels is None else channels
        stored = self._stored_channels(channels)
        mean, std = self._stats(stored)
        reps = channels // stored
        return mean.repeat(reps).tolist(), std.repeat(reps).tolist()

    def _stats(self, stored: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("stats", stored)
        if key not in self._cache:
            total = torch.zeros(stored, dtype=torch.float64)
            total_sq = torch.zeros(stored, dtype=torch.float64)
            for start in range(0, self.num_train, _CHUNK):
                x = self._adapt(self.train_x[start : start + _CHUNK], stored).double()
                total += x.sum(dim=(0, 2, 3))
                total_sq += x.square().sum(dim=(0, 2, 3))
            count = self.num_train * self.image_size[0] * self.image_size[1]
            mean = total / count
            std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt().clamp_min(1e-3)
            self._cache[key] = (mean.float(), std.float())
        return self._cache[key]

    # -- channel / resolution adaptation ----------------------------------- #

    def _stored_channels(self, channels: int) -> int:
        """Channels a loader caches: 1 when the output is grey or merely repeats grey."""
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        c_in = self.in_channels
        if c_in == 1 or channels == 1:
            return 1
        if channels == c_in:
            return channels
        raise ValueError(
            f"cannot adapt {c_in}-channel images to {channels} channels "
            "(supported: same count, 1 -> N by repetition, N -> 1 by averaging)"
        )

    def _adapt(self, x: torch.Tensor, stored: int) -> torch.Tensor:
        """uint8 [n, C, H, W] -> float32 in [0, 1] with ``stored`` channels."""
        out = x.float().div_(255.0)
        if stored == 1 and out.shape[1] != 1:
            out = out.mean(dim=1, keepdim=True)
        return out

    def _transform(self, x: torch.Tensor, resolution: int, stored: int) -> torch.Tensor:
        """uint8 images -> normalized float32 [n, stored, resolution, resolution]."""
        mean, std = self._stats(stored)
        out = self._adapt(x, stored)
        h, w = out.shape[2], out.shape[3]
        if (h, w) != (resolution, resolution) and out.shape[0] > 0:
            out = F.interpolate(
                out,
                size=(resolution, resolution),
                mode="bilinear",
                align_corners=False,
                antialias=resolution < max(h, w),
            )
        elif out.shape[0] == 0:
            out = out.new_empty((0, stored, resolution, resolution))
        return out.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))

    def _prepared(
        self, split: str, resolution: int, stored: int, limit: int | None, seed: int,
        indices: np.ndarray,
    ) -> torch.Tensor | None:
        """The cached normalized tensor for ``indices`` of ``split`` (None if too large)."""
        full_key = ("x", split, resolution, stored, None, None)
        if full_key in self._cache:
            full = self._cache[full_key]
            return full if limit is None else full[torch.from_numpy(indices)]
        key = ("x", split, resolution, stored, limit, None if limit is None else seed)
        if key in self._cache:
            return self._cache[key]
        n = indices.shape[0]
        if n * stored * resolution * resolution * 4 > CACHE_LIMIT_BYTES:
            return None
        x, _ = self._split(split)
        out = torch.empty((n, stored, resolution, resolution), dtype=torch.float32)
        index = torch.from_numpy(indices)
        for start in range(0, n, _CHUNK):
            part = index[start : start + _CHUNK]
            out[start : start + part.shape[0]] = self._transform(x[part], resolution, stored)
        self._cache[key] = out
        return out

    def clear_cache(self) -> None:
        """Drop cached resized tensors and statistics."""
        self._cache.clear()

    # -- access ------------------------------------------------------------ #

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "train":
            return self.train_x, self.train_y
        if split == "val":
            return self.val_x, self.val_y
        raise ValueError(f"unknown split {split!r}; use 'train' or 'val'")

    def _selection(self, split: str, limit: int | None, seed: int) -> tuple[np.ndarray, int | None]:
        """Indices a loader uses: all, or a seeded stratified draw of ``limit``."""
        _, y = self._split(split)
        n = int(y.shape[0])
        if limit is not None:
            if limit < 1:
                raise ValueError(f"limit must be >= 1, got {limit}")
            if limit < n:
                return stratified_indices(y.numpy(), limit, seed), limit
        return np.arange(n, dtype=np.int64), None

    def loader(
        self,
        split: str = "train",
        batch_size: int = 64,
        resolution: int = 32,
        channels: int = 3,
        shuffle: bool = True,
        seed: int = 0,
        limit: int | None = None,
        drop_last: bool = False,
    ) -> Loader:
        """An iterable of normalized ``(x float32 [B, channels, res, res], y int64 [B])``.

        Each pass over the loader is one epoch; with ``shuffle`` the order of
        epoch e is a permutation seeded by ``(seed, e)``, so a fresh loader with
        the same arguments repeats the same sequence. ``limit`` keeps only a
        seeded stratified draw of ``limit`` examples of the split. ``drop_last``
        drops a final partial batch (useful with BatchNorm). Resized tensors
        stay cached on the dataset until :meth:`clear_cache`.
        """
        _check_positive(batch_size=batch_size, resolution=resolution)
        stored = self._stored_channels(channels)
        indices, limit = self._selection(split, limit, seed)
        return Loader(self, split, indices, limit, batch_size, resolution, channels, stored,
                      shuffle, seed, drop_last)

    def batch(
        self,
        split: str = "train",
        batch_size: int = 64,
        resolution: int = 32,
        channels: int = 3,
        seed: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One stratified, seeded minibatch ``(x, y)`` (smaller if the split is)."""
        _check_positive(batch_size=batch_size, resolution=resolution)
        stored = self._stored_channels(channels)
        x, y = self._split(split)
        if y.shape[0] == 0:
            raise ValueError(f"the {split} split is empty")
        chosen = stratified_indices(y.numpy(), batch_size, seed)
        index = torch.from_numpy(np.random.default_rng(seed).permutation(chosen))
        out = self._transform(x[index], resolution, stored)
        return _expand(out, channels), y[index].clone()

    def subset(self, n_train: int, n_val: int | None = None, seed: int = 0) -> Dataset:
        """A new dataset with stratified, seeded draws of ``n_train`` / ``n_val`` examples.

        ``n_val=None`` keeps the whole val split; counts above a split's size keep it all.
        """
        if n_train < 1:
            raise ValueError(f"n_train must be >= 1, got {n_train}")
        if n_val is not None and n_val < 0:
            raise ValueError(f"n_val must be >= 0, got {n_val}")
        tr = torch.from_numpy(stratified_indices(self.train_y.numpy(), n_train, seed))
        if n_val is None:
            va = torch.arange(self.num_val)
        else:
            va = torch.from_numpy(stratified_indices(self.val_y.numpy(), n_val, seed))
        return Dataset(
            name=self.name,
            classes=list(self.classes),
            train_x=self.train_x[tr].clone(),
            train_y=self.train_y[tr].clone(),
            val_x=self.val_x[va].clone(),
            val_y=self.val_y[va].clone(),
            train_soft=None if self.train_soft is None else self.train_soft[tr].clone(),
        )


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise ValueError(f"{key} must be >= 1, got {value}")


def _expand(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[1] == channels:
        return x
    return x.expand(-1, channels, -1, -1).contiguous()


class Loader:
    """Minibatches of one split of a :class:`Dataset`; made by :meth:`Dataset.loader`.

    ``len(loader)`` is the number of batches per epoch; ``loader.epoch`` is the
    epoch the next iteration will produce (settable, e.g. to resume).
    """

    def __init__(
        self,
        dataset: Dataset,
        split: str,
        indices: np.ndarray,
        limit: int | None,
        batch_size: int,
        resolution: int,
        channels: int,
        stored: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
    ) -> None:
        self.dataset = dataset
        self.split = split
        self.batch_size = batch_size
        self.resolution = resolution
        self.channels = channels
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self._indices = indices
        self._stored = stored
        _, y = dataset._split(split)
        if split == "train" and dataset.train_soft is not None:
            y = dataset.train_soft  # soft targets (with_train)
        self._y = y[torch.from_numpy(indices)]
        self._x = dataset._prepared(split, resolution, stored, limit, seed, indices)

    @property
    def num_examples(self) -> int:
        """Examples per epoch (before ``drop_last``)."""
        return int(self._indices.shape[0])

    def __len__(self) -> int:
        n = self.num_examples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_examples
        if self.shuffle:
            order = torch.from_numpy(np.random.default_rng([self.seed, self.epoch]).permutation(n))
        else:
            order = torch.arange(n)
        self.epoch += 1
        return self._batches(order)

    def _batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(len(self)):
            pos = order[b * self.batch_size : (b + 1) * self.batch_size]
            if self._x is not None:
                x = self._x[pos]
            else:
                raw, _ = self.dataset._split(self.split)
                source = torch.from_numpy(self._indices)[pos]
                x = self.dataset._transform(raw[source], self.resolution, self._stored)
            yield _expand(x, self.channels), self._y[pos]


def from_arrays(
    name: str, classes: Sequence[str], train_x: np.ndarray, train_y: np.ndarray,
    val_x: np.ndarray, val_y: np.ndarray,
) -> Dataset:
    """A :class:`Dataset` from NumPy arrays (images ``[N, C, H, W]``, integer labels ``[N]``)."""
    return Dataset(
        name=name,
        classes=list(classes),
        train_x=torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.uint8)),
        train_y=torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
        val_x=torch.from_numpy(np.ascontiguousarray(val_x, dtype=np.uint8)),
        val_y=torch.from_numpy(np.ascontiguousarray(val_y, dtype=np.int64)),
    )
