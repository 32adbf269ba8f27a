"""The ``folder:DIR`` source: an ImageFolder tree, one subfolder per class.

``DIR/train`` + ``DIR/val`` (or ``DIR/test``) give the two splits; a lone
``DIR/train`` or a plain class tree is split by class with a seeded
``val_fraction``. Images are resized with Pillow (bilinear) to one square size
``S x S``, where ``S`` is the long side of the first image (classes and files in
sorted order) capped at :data:`FOLDER_MAX_SIDE` pixels; they are kept grey
(1 channel) when every image is grey, else converted to RGB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import Dataset, from_arrays
from .errors import DataRuntimeError
from .sampling import stratified_split
from .source import Source

__all__ = ["FOLDER", "FOLDER_MAX_SIDE", "load_folder"]

FOLDER_MAX_SIDE = 64
"""Largest side, in pixels, that ``folder:`` images are stored at."""

_IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"})


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
        raise DataRuntimeError(f"{label}: directory {root} not found")
    class_dirs = _visible_dirs(root)
    if not class_dirs:
        raise DataRuntimeError(f"{label}: {root} has no class subfolders (expected one folder per class)")
    items: list[tuple[Path, int]] = []
    for position, class_dir in enumerate(class_dirs):
        if classes is None:
            index = position
        elif class_dir.name in classes:
            index = classes.index(class_dir.name)
        else:
            raise DataRuntimeError(f"{label}: {class_dir} is not a class of the train split")
        files = _image_files(class_dir)
        if not files:
            raise DataRuntimeError(f"{label}: class folder {class_dir} holds no images")
        items.extend((f, index) for f in files)
    return items


def _open_image(path: Path, label: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataRuntimeError(f"{label}: cannot read image {path}: {exc}") from None


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
        raise DataRuntimeError(f"{label}: directory {directory} not found")
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
        raise DataRuntimeError(f"{label}: only one class ({classes[0]}); classification needs at least two")
    first = _open_image(train_items[0][0], label)
    side = max(1, min(max_side, max(first.size)))
    train_arrays, train_y = _read_images(train_items, side, label)
    val_arrays, val_y = _read_images(val_items, side, label)
    colour = any(a.ndim == 3 for a in train_arrays + val_arrays)
    train_x = _stack(train_arrays, colour, side)
    val_x = _stack(val_arrays, colour, side)
    if not val_items:
        tr, va = stratified_split(train_y, val_fraction, seed, label)
        train_x, train_y, val_x, val_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
    return from_arrays(label, classes, train_x, train_y, val_x, val_y)


def _read_folder(directory: Path, *, name: str, seed: int, val_fraction: float) -> Dataset:
    return load_folder(directory, seed, val_fraction, name=name)


FOLDER = Source(
    name="folder",
    what="ImageFolder tree (one subfolder per class; `train/` and `val/` if present, else a "
    "seeded stratified split)",
    load=_read_folder,
)
