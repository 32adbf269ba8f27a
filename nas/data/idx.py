"""IDX sources: ``idx:DIR`` (MNIST-format files anywhere) and ``fashion-mnist`` (Debian's copy).

``DIR`` holds ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` and,
optionally, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
plain or gzipped (``.gz``; dotted ``train-images.idx3-ubyte`` names are found
too); an optional ``DIR/classes.txt`` names the classes, one a line. The held-out
split is ``t10k`` when present, else a seeded stratified ``val_fraction`` of train.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .dataset import Dataset, from_arrays
from .errors import DataRuntimeError
from .sampling import stratified_split
from .source import Source

__all__ = [
    "FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IDX",
    "load_idx",
    "read_idx",
    "write_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the IDX files."""

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
        raise DataRuntimeError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataRuntimeError(f"{label}: {path} is a corrupt or truncated gzip file ({exc})") from None
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
        raise DataRuntimeError(f"{label}: {path.name} is not an IDX file (bad magic number)")
    ndim = data[3]
    if ndim == 0:
        raise DataRuntimeError(f"{label}: {path.name} declares zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataRuntimeError(f"{label}: {path.name} is truncated (incomplete header)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header < expected:
        raise DataRuntimeError(
            f"{label}: {path.name} is truncated ({len(data) - header} of {expected} data bytes)"
        )
    if len(data) - header > expected:
        raise DataRuntimeError(
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
        raise DataRuntimeError(f"{label}: {path.name} holds {array.dtype} values; images must be unsigned bytes")
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[3] in (1, 3):
        array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    else:
        raise DataRuntimeError(f"{label}: {path.name} has shape {array.shape}; expected [N, H, W]")
    if array.shape[0] == 0 or array.shape[2] == 0 or array.shape[3] == 0:
        raise DataRuntimeError(f"{label}: {path.name} holds no images")
    return array


def _idx_labels(path: Path, label: str, count: int, images: Path) -> np.ndarray:
    array = read_idx(path, label)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataRuntimeError(f"{label}: {path.name} has shape {array.shape} ({array.dtype}); expected [N] integers")
    if array.shape[0] != count:
        raise DataRuntimeError(
            f"{label}: {images.name} holds {count} images but {path.name} holds {array.shape[0]} labels"
        )
    if array.min() < 0:
        raise DataRuntimeError(f"{label}: {path.name} holds negative labels")
    return array.astype(np.int64)


def _class_names(directory: Path, labels: Sequence[np.ndarray], label: str) -> list[str]:
    top = max(int(y.max()) for y in labels if y.size)
    names_file = directory / "classes.txt"
    if names_file.is_file():
        try:
            names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataRuntimeError(f"{label}: cannot read {names_file}: {exc}") from None
        names = [n for n in names if n]
        if top >= len(names):
            raise DataRuntimeError(f"{label}: label {top} found but classes.txt names only {len(names)} classes")
        return names
    return [str(i) for i in range(top + 1)]


def load_idx(
    directory: str | os.PathLike[str],
    seed: int = 0,
    val_fraction: float = 0.1,
    name: str | None = None,
    classes: Sequence[str] | None = None,
) -> Dataset:
    """Load MNIST-format IDX files from ``directory`` (see the module docstring for the file names).

    ``val`` is the t10k split when both t10k files exist, else a seeded
    stratified ``val_fraction`` of train. Class names come from ``classes``,
    else ``directory/classes.txt``, else ``"0".."K-1"``.
    """
    directory = Path(directory).expanduser()
    label = name or f"idx:{directory}"
    if not directory.is_dir():
        raise DataRuntimeError(f"{label}: directory {directory} not found")
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
            raise DataRuntimeError(f"{label}: {stem}[.gz] not found in {directory}")
        return path

    train_files = required("train-images-idx3-ubyte"), required("train-labels-idx1-ubyte")
    test_files = [found["t10k-images-idx3-ubyte"], found["t10k-labels-idx1-ubyte"]]
    if (test_files[0] is None) != (test_files[1] is None):
        missing = "t10k-images-idx3-ubyte" if test_files[0] is None else "t10k-labels-idx1-ubyte"
        raise DataRuntimeError(f"{label}: {missing}[.gz] not found in {directory} (its pair is present)")

    def pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
        images = _idx_images(images_path, label)
        return images, _idx_labels(labels_path, label, images.shape[0], images_path)

    train_x, train_y = pair(*train_files)
    if test_files[0] is not None and test_files[1] is not None:
        val_x, val_y = pair(test_files[0], test_files[1])
        if val_x.shape[1:] != train_x.shape[1:]:
            raise DataRuntimeError(
                f"{label}: t10k images are {val_x.shape[1:]} but train images are {train_x.shape[1:]}"
            )
    else:
        tr, va = stratified_split(train_y, val_fraction, seed, label)
        train_x, train_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
    if classes is not None:
        names = list(classes)
        top = max(int(train_y.max()), int(val_y.max()) if val_y.size else 0)
        if top >= len(names):
            raise DataRuntimeError(f"{label}: label {top} found but only {len(names)} classes are known")
    else:
        names = _class_names(directory, [train_y, val_y], label)
    return from_arrays(label, names, train_x, train_y, val_x, val_y)


def _read_idx_dir(directory: Path, *, name: str, seed: int, val_fraction: float) -> Dataset:
    return load_idx(directory, seed, val_fraction, name=name)


def _read_fashion_mnist(directory: Path, *, name: str, seed: int, val_fraction: float) -> Dataset:
    return load_idx(directory, seed, val_fraction, name=name, classes=FASHION_MNIST_CLASSES)


IDX = Source(
    name="idx",
    what="MNIST-format IDX files, plain or `.gz`",
    load=_read_idx_dir,
)

FASHION_MNIST = Source(
    name="fashion-mnist",
    what=f"`{FASHION_MNIST_DIR}`, from Debian's package `dataset-fashion-mnist` "
    "(`apt-get install dataset-fashion-mnist`)",
    load=_read_fashion_mnist,
    directory=FASHION_MNIST_DIR,
    missing="fashion-mnist: {directory} not found; install Debian's package dataset-fashion-mnist "
    "(apt-get install dataset-fashion-mnist) or use --data idx:DIR",
)
