"""Image-classification datasets held in memory, never downloaded.

Sources (the ``--data`` strings understood by :func:`load_dataset`)::

    sample          small stratified Fashion-MNIST subset shipped in nas/_sample/
                    (3000 train + 1000 test, 28x28 grey, 10 classes)
    fashion-mnist   idx:/usr/share/datasets/fashion-mnist (Debian package
                    dataset-fashion-mnist)
    idx:DIR         MNIST-format IDX files, plain or gzipped:
                    train-images-idx3-ubyte, train-labels-idx1-ubyte and,
                    optionally, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte;
                    an optional DIR/classes.txt names the classes, one a line
    folder:DIR      ImageFolder tree, one subfolder per class; DIR/train and
                    DIR/val (or DIR/test) are used when present
    cifar:DIR       CIFAR-10 (data_batch_*, test_batch, batches.meta) or
                    CIFAR-100 (train, test, meta) python-pickle batches

Conventions:

* Images are stored as ``torch.uint8`` tensors ``[N, C, H, W]`` and labels as
  ``torch.int64`` ``[N]``; everything lives in memory (the data is small).
* The held-out ``val`` split is the source's own test split when it has one
  (IDX ``t10k``, CIFAR ``test_batch``/``test``, folder ``val/``); otherwise a
  seeded split stratified by class holds out ``val_fraction`` of every class
  (at least one image of each class with two or more images).
* ``folder:`` images are resized with Pillow (bilinear) to one square size
  ``S x S``, where ``S`` is the long side of the first image (classes and
  files in sorted order) capped at :data:`FOLDER_MAX_SIDE` (64) pixels; they
  are kept grey (1 channel) when every image is grey, else converted to RGB.
* CIFAR batches are pickles (their own distribution format). They are read
  with :class:`_RestrictedUnpickler`, which resolves only the few NumPy array
  reconstruction helpers (and ``_codecs.encode``) that such files contain and
  refuses every other global, so a crafted file cannot run code.
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
  :func:`stratified_indices`: every class gets its share of N, within one
  example, and which examples is a seeded random choice.
* Problems with the data raise :class:`DataError`, whose message is one
  user-facing line; invalid arguments to :class:`Dataset` methods raise
  ``ValueError``.
"""

from __future__ import annotations

import gzip
import importlib
import math
import os
import pickle
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CACHE_LIMIT_BYTES",
    "CIFAR10_CLASSES",
    "DataError",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FOLDER_MAX_SIDE",
    "Loader",
    "SAMPLE_DIR",
    "SOURCE_FORMS",
    "load_cifar",
    "load_dataset",
    "load_folder",
    "load_idx",
    "read_idx",
    "stratified_indices",
    "write_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

SAMPLE_DIR = Path(__file__).resolve().parent / "_sample"
"""The embedded Fashion-MNIST subset (made by ``scripts/make_sample.py``)."""

FOLDER_MAX_SIDE = 64
"""Largest side, in pixels, that ``folder:`` images are stored at."""

CACHE_LIMIT_BYTES = 2 * 1024**3
"""Largest resized float tensor a loader caches; above it, it resizes per batch."""

SOURCE_FORMS = ("sample", "fashion-mnist", "idx:DIR", "folder:DIR", "cifar:DIR")
"""The valid forms of a data source string."""

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

SPLITS = ("train", "val")

_IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})
_CHUNK = 2048  # images converted at once when caching / computing statistics


class DataError(Exception):
    """A problem with a data source, described in one user-facing line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# --------------------------------------------------------------------------- #
# Stratified orders and splits
# --------------------------------------------------------------------------- #


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


def _check_fraction(val_fraction: float) -> None:
    if not isinstance(val_fraction, (int, float)) or not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def _stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val), holding out ``val_fraction`` of each class.

    A class of n >= 2 examples gives ``max(1, round(n * val_fraction))`` to
    val but always keeps one for train; a class of one example stays in train.
    """
    _check_fraction(val_fraction)
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
        raise DataError(f"{label}: too few images to hold out a validation split (every class has one)")
    val = np.sort(np.concatenate(val_parts))
    mask = np.ones(labels.shape[0], dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask).astype(np.int64), val.astype(np.int64)


# --------------------------------------------------------------------------- #
# Dataset
# --------------------------------------------------------------------------- #


@dataclass(frozen=True, eq=False)
class Dataset:
    """An in-memory labelled image dataset with a train and a held-out val split.

    Attributes:
        name: the source it came from (e.g. ``"sample"``, ``"idx:/data/mnist"``).
        classes: class names; label ``i`` is ``classes[i]``.
        train_x, val_x: ``torch.uint8`` images ``[N, C, H, W]``.
        train_y, val_y: ``torch.int64`` labels ``[N]``.
    """

    name: str
    classes: list[str]
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    val_x: torch.Tensor = field(repr=False)
    val_y: torch.Tensor = field(repr=False)
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
        if self.val_x.shape[0] and self.val_x.shape[1:] != self.train_x.shape[1:]:
            raise ValueError("train_x and val_x must have the same [C, H, W]")

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


# --------------------------------------------------------------------------- #
# IDX
# --------------------------------------------------------------------------- #

_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def _read_bytes(path: Path, label: str) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{label}: {path} is a corrupt or truncated gzip file ({exc})") from None
    return raw


def read_idx(path: str | os.PathLike[str], label: str | None = None) -> np.ndarray:
    """Parse one IDX file (plain or gzipped) into an array of its declared shape and type.

    Header: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short,
    0x0C int, 0x0D float, 0x0E double), the number of dimensions, then each
    dimension as a big-endian uint32; the data follows, big-endian.
    """
    path = Path(path)
    label = label or f"idx:{path.parent}"
    data = _read_bytes(path, label)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DataError(f"{label}: {path.name} is not an IDX file (bad magic number)")
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{label}: {path.name} declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{label}: {path.name} is truncated (incomplete header)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header < expected:
        raise DataError(
            f"{label}: {path.name} is truncated ({len(data) - header} of {expected} data bytes)"
        )
    if len(data) - header > expected:
        raise DataError(
            f"{label}: {path.name} is corrupt ({len(data) - header - expected} bytes after the data)"
        )
    array = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header)
    return array.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file; gzipped (deterministically, mtime 0) if ``compress``.

    ``compress=None`` compresses when the file name ends in ``.gz``.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"cannot write a {array.dtype} array of {array.ndim} dims as IDX")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(_IDX_TYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9
        ) as gz:
            gz.write(payload)
    else:
        path.write_bytes(payload)


def _find_idx(directory: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _idx_images(path: Path, label: str) -> np.ndarray:
    array = read_idx(path, label)
    if array.dtype != np.uint8:
        raise DataError(f"{label}: {path.name} holds {array.dtype} values; images must be unsigned bytes")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[3] in (1, 3):
        array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    else:
        raise DataError(f"{label}: {path.name} has shape {array.shape}; expected [N, H, W]")
    if array.shape[0] == 0 or array.shape[2] == 0 or array.shape[3] == 0:
        raise DataError(f"{label}: {path.name} holds no images")
    return array


def _idx_labels(path: Path, label: str, count: int, images: Path) -> np.ndarray:
    array = read_idx(path, label)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataError(f"{label}: {path.name} has shape {array.shape} ({array.dtype}); expected [N] integers")
    if array.shape[0] != count:
        raise DataError(
            f"{label}: {images.name} holds {count} images but {path.name} holds {array.shape[0]} labels"
        )
    if array.min() < 0:
        raise DataError(f"{label}: {path.name} holds negative labels")
    return array.astype(np.int64)


def _class_names(directory: Path, labels: Sequence[np.ndarray], label: str) -> list[str]:
    top = max(int(y.max()) for y in labels if y.size)
    names_file = directory / "classes.txt"
    if names_file.is_file():
        try:
            names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{label}: cannot read {names_file}: {exc}") from None
        names = [n for n in names if n]
        if top >= len(names):
            raise DataError(f"{label}: label {top} found but classes.txt names only {len(names)} classes")
        return names
    return [str(i) for i in range(top + 1)]


def load_idx(
    directory: str | os.PathLike[str],
    seed: int = 0,
    val_fraction: float = 0.1,
    name: str | None = None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """Load MNIST-format IDX files from ``directory`` (see the module docstring).

    ``val`` is the t10k split when both t10k files exist, else a seeded
    stratified ``val_fraction`` of train. Class names come from ``classes``,
    else ``directory/classes.txt``, else ``"0".."K-1"``.
    """
    directory = Path(directory).expanduser()
    label = name or f"idx:{directory}"
    if not directory.is_dir():
        raise DataError(f"{label}: directory {directory} not found")
    found = {
        stem: _find_idx(directory, stem)
        for stem in (
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        )
    }

    def required(stem: str) -> Path:
        path = found[stem]
        if path is None:
            raise DataError(f"{label}: {stem}[.gz] not found in {directory}")
        return path

    train_files = required("train-images-idx3-ubyte"), required("train-labels-idx1-ubyte")
    test_files = [found["t10k-images-idx3-ubyte"], found["t10k-labels-idx1-ubyte"]]
    if (test_files[0] is None) != (test_files[1] is None):
        missing = "t10k-images-idx3-ubyte" if test_files[0] is None else "t10k-labels-idx1-ubyte"
        raise DataError(f"{label}: {missing}[.gz] not found in {directory} (its pair is present)")

    def pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
        images = _idx_images(images_path, label)
        return images, _idx_labels(labels_path, label, images.shape[0], images_path)

    train_x, train_y = pair(*train_files)
    if test_files[0] is not None and test_files[1] is not None:
        val_x, val_y = pair(test_files[0], test_files[1])
        if val_x.shape[1:] != train_x.shape[1:]:
            raise DataError(
                f"{label}: t10k images are {val_x.shape[1:]} but train images are {train_x.shape[1:]}"
            )
    else:
        tr, va = _stratified_split(train_y, val_fraction, seed, label)
        train_x, train_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
    if classes is not None:
        names = list(classes)
        top = max(int(train_y.max()), int(val_y.max()) if val_y.size else 0)
        if top >= len(names):
            raise DataError(f"{label}: label {top} found but only {len(names)} classes are known")
    else:
        names = _class_names(directory, [train_y, val_y], label)
    return _make(label, names, train_x, train_y, val_x, val_y)


def _make(
    name: str, classes: Sequence[str], train_x: np.ndarray, train_y: np.ndarray,
    val_x: np.ndarray, val_y: np.ndarray,
) -> Dataset:
    return Dataset(
        name=name,
        classes=list(classes),
        train_x=torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.uint8)),
        train_y=torch.from_numpy(np.ascontiguousarray(train_y, dtype=np.int64)),
        val_x=torch.from_numpy(np.ascontiguousarray(val_x, dtype=np.uint8)),
        val_y=torch.from_numpy(np.ascontiguousarray(val_y, dtype=np.int64)),
    )


# --------------------------------------------------------------------------- #
# ImageFolder
# --------------------------------------------------------------------------- #


def _visible_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def _scan(root: Path, label: str, classes: list[str] | None) -> list[tuple[Path, int]]:
    """(file, class index) pairs under ``root``; class folders must hold images."""
    if not root.is_dir():
        raise DataError(f"{label}: directory {root} not found")
    class_dirs = _visible_dirs(root)
    if not class_dirs:
        raise DataError(f"{label}: {root} has no class subfolders (expected one folder per class)")
    items: list[tuple[Path, int]] = []
    for position, class_dir in enumerate(class_dirs):
        if classes is None:
            index = position
        elif class_dir.name in classes:
            index = classes.index(class_dir.name)
        else:
            raise DataError(f"{label}: {class_dir} is not a class of the train split")
        files = _image_files(class_dir)
        if not files:
            raise DataError(f"{label}: class folder {class_dir} holds no images")
        items.extend((f, index) for f in files)
    return items


def _open_image(path: Path, label: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(f"{label}: cannot read image {path}: {exc}") from None


def _to_array(image: Any, side: int) -> np.ndarray:
    """A PIL image -> uint8 [side, side] (grey) or [side, side, 3] (colour)."""
    from PIL import Image

    if image.mode in _GREY_MODES:
        if image.mode.startswith("I;16"):
            image = Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
        else:
            image = image.convert("L")
    else:
        image = image.convert("RGB")
    if image.size != (side, side):
        image = image.resize((side, side), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _read_images(items: list[tuple[Path, int]], side: int, label: str) -> tuple[list[np.ndarray], np.ndarray]:
    arrays = [_to_array(_open_image(path, label), side) for path, _ in items]
    return arrays, np.asarray([index for _, index in items], dtype=np.int64)


def _stack(arrays: list[np.ndarray], colour: bool, side: int) -> np.ndarray:
    channels = 3 if colour else 1
    out = np.empty((len(arrays), channels, side, side), dtype=np.uint8)
    for i, a in enumerate(arrays):
        out[i] = a.transpose(2, 0, 1) if a.ndim == 3 else a[None]
    return out


def load_folder(
    directory: str | os.PathLike[str],
    seed: int = 0,
    val_fraction: float = 0.1,
    name: str | None = None,
    max_side: int = FOLDER_MAX_SIDE,
) -> Dataset:
    """Load an ImageFolder tree (see the module docstring for sizing and colour rules).

    ``DIR/train`` + ``DIR/val`` (or ``DIR/test``) give the splits; a lone
    ``DIR/train`` or a plain class tree is split by class with ``val_fraction``.
    """
    directory = Path(directory).expanduser()
    label = name or f"folder:{directory}"
    if not directory.is_dir():
        raise DataError(f"{label}: directory {directory} not found")
    train_root = directory / "train"
    val_root = next((directory / n for n in ("val", "test") if (directory / n).is_dir()), None)
    if train_root.is_dir() and val_root is not None:
        train_items = _scan(train_root, label, None)
        classes = [d.name for d in _visible_dirs(train_root)]
        val_items = _scan(val_root, label, classes)
    else:
        root = train_root if train_root.is_dir() else directory
        train_items = _scan(root, label, None)
        classes = [d.name for d in _visible_dirs(root)]
        val_items = []
    if len(classes) < 2:
        raise DataError(f"{label}: only one class ({classes[0]}); classification needs at least two")
    first = _open_image(train_items[0][0], label)
    side = max(1, min(max_side, max(first.size)))
    train_arrays, train_y = _read_images(train_items, side, label)
    val_arrays, val_y = _read_images(val_items, side, label)
    colour = any(a.ndim == 3 for a in train_arrays + val_arrays)
    train_x = _stack(train_arrays, colour, side)
    val_x = _stack(val_arrays, colour, side)
    if not val_items:
        tr, va = _stratified_split(train_y, val_fraction, seed, label)
        train_x, train_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
    return _make(label, classes, train_x, train_y, val_x, val_y)


# --------------------------------------------------------------------------- #
# CIFAR (python pickle batches)
# --------------------------------------------------------------------------- #


def _numpy_global(name: str) -> Any:
    """A NumPy pickle helper from its NumPy 2 home (``numpy._core``), else NumPy 1's."""
    home = "numeric" if name == "_frombuffer" else "multiarray"
    for module in (f"numpy._core.{home}", f"numpy.core.{home}"):
        try:
            found = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    raise pickle.UnpicklingError(f"numpy helper {name} unavailable")


_ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",
    ("_codecs", "encode"): "encode",
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches: only NumPy array/scalar reconstruction is allowed.

    Dicts, lists, strings, bytes and numbers need no globals; NumPy arrays
    need ``ndarray``, ``dtype``, ``_reconstruct`` / ``_frombuffer`` and
    ``scalar``; protocol-2 bytes need ``_codecs.encode``. Any other global
    (``os.system``, ``builtins.eval``...) raises ``UnpicklingError``.
    """

    def find_class(self, module: str, name: str) -> Any:
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        if target == "encode":
            import codecs

            return codecs.encode
        if target in ("ndarray", "dtype"):
            return getattr(np, target)
        return _numpy_global(target)


def _unpickle(path: Path, label: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            obj = _RestrictedUnpickler(f, encoding="latin1").load()
    except OSError as exc:
        raise DataError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # any malformed pickle: report, never crash
        reason = str(exc) or type(exc).__name__
        raise DataError(f"{label}: {path.name} is not a valid CIFAR batch ({reason})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{label}: {path.name} is not a valid CIFAR batch (not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path, label)
    if "data" not in batch or label_key not in batch:
        raise DataError(f"{label}: {path.name} lacks the 'data' or '{label_key}' entry")
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{label}: {path.name} has malformed entries ({exc})") from None
    if data.dtype != np.uint8 or not (
        (data.ndim == 2 and data.shape[1] == 3072) or (data.ndim == 4 and data.shape[1:] == (3, 32, 32))
    ):
        raise DataError(
            f"{label}: {path.name} data is {data.dtype} {data.shape}; expected uint8 [N, 3072]"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataError(
            f"{label}: {path.name} holds {data.shape[0]} images but {labels.shape} labels"
        )
    if data.shape[0] == 0:
        raise DataError(f"{label}: {path.name} holds no images")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_names(path: Path, label: str, key: str, fallback: Sequence[str]) -> list[str]:
    if not path.is_file():
        return list(fallback)
    meta = _unpickle(path, label)
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataError(f"{label}: {path.name} lacks '{key}'")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(directory: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Load CIFAR-10 or CIFAR-100 (fine labels) python batches from ``directory``.

    ``directory`` may also be the parent of ``cifar-10-batches-py`` or
    ``cifar-100-python``. The official test batch is the val split.
    """
    directory = Path(directory).expanduser()
    label = name or f"cifar:{directory}"
    if not directory.is_dir():
        raise DataError(f"{label}: directory {directory} not found")
    if not any((directory / f).is_file() for f in ("data_batch_1", "train", "test_batch", "test")):
        inner = [directory / d for d in ("cifar-10-batches-py", "cifar-100-python")]
        inner = [d for d in inner if d.is_dir()]
        if len(inner) == 1:
            directory = inner[0]
    batches = sorted(
        (p for p in directory.glob("data_batch_*") if p.is_file()),
        key=lambda p: (len(p.name), p.name),
    )
    if batches:
        test = directory / "test_batch"
        if not test.is_file():
            raise DataError(f"{label}: CIFAR-10 test_batch not found in {directory}")
        parts = [_cifar_batch(p, label, "labels") for p in batches]
        val_x, val_y = _cifar_batch(test, label, "labels")
        names = _cifar_names(directory / "batches.meta", label, "label_names", CIFAR10_CLASSES)
    elif (directory / "train").is_file():
        test = directory / "test"
        if not test.is_file():
            raise DataError(f"{label}: CIFAR-100 test file not found in {directory}")
        parts = [_cifar_batch(directory / "train", label, "fine_labels")]
        val_x, val_y = _cifar_batch(test, label, "fine_labels")
        names = _cifar_names(directory / "meta", label, "fine_label_names",
                             [str(i) for i in range(100)])
    else:
        raise DataError(
            f"{label}: no CIFAR batches in {directory} (expected data_batch_1..5 and test_batch "
            "for CIFAR-10, or train and test for CIFAR-100)"
        )
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    top = max(int(train_y.max()), int(val_y.max()))
    if min(int(train_y.min()), int(val_y.min())) < 0 or top >= len(names):
        raise DataError(f"{label}: labels outside 0..{len(names) - 1}")
    return _make(label, names, train_x, train_y, val_x, val_y)


# --------------------------------------------------------------------------- #
# Entry point
# --------------------------------------------------------------------------- #


def load_dataset(source: str, seed: int = 0, val_fraction: float = 0.1) -> Dataset:
    """Load a dataset from a source string (one of :data:`SOURCE_FORMS`).

    ``seed`` and ``val_fraction`` only matter for sources without their own
    test split. Raises :class:`DataError` with a one-line message on any
    problem with the source.
    """
    _check_fraction(val_fraction)
    text = source.strip()
    if text == "sample":
        if not SAMPLE_DIR.is_dir():
            raise DataError(
                f"sample: the embedded sample is missing at {SAMPLE_DIR}; reinstall the package "
                "with its data files"
            )
        return load_idx(SAMPLE_DIR, seed, val_fraction, name="sample", classes=FASHION_MNIST_CLASSES)
    if text == "fashion-mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise DataError(
                f"fashion-mnist: {FASHION_MNIST_DIR} not found; install Debian's package "
                "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or use --data idx:DIR"
            )
        return load_idx(FASHION_MNIST_DIR, seed, val_fraction, name="fashion-mnist",
                        classes=FASHION_MNIST_CLASSES)
    kind, sep, path = text.partition(":")
    if sep and kind in ("idx", "folder", "cifar"):
        if not path.strip():
            raise DataError(f"{kind}: needs a directory, e.g. {kind}:/path/to/data")
        path = path.strip()
        if kind == "idx":
            return load_idx(path, seed, val_fraction, name=text)
        if kind == "folder":
            return load_folder(path, seed, val_fraction, name=text)
        return load_cifar(path, name=text)
    raise DataError(f"unknown data source {source!r}; valid forms: {', '.join(SOURCE_FORMS)}")
