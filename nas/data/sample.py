"""The ``sample`` source: a small Fashion-MNIST subset shipped inside the package.

3,000 train + 1,000 test images (28x28 grey, 10 classes, 300 and 100 per class)
drawn by ``scripts/make_sample.py`` and stored as gzipped IDX files in
``nas/_sample/``, so a search runs with no download and no system package.
"""

from __future__ import annotations

from pathlib import Path

from .dataset import Dataset
from .idx import FASHION_MNIST_CLASSES, load_idx
from .source import Source

__all__ = ["SAMPLE", "SAMPLE_DIR"]

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "_sample"
"""The embedded Fashion-MNIST subset (made by ``scripts/make_sample.py``)."""


def _read_sample(directory: Path, *, name: str, seed: int, val_fraction: float) -> Dataset:
    return load_idx(directory, seed, val_fraction, name=name, classes=FASHION_MNIST_CLASSES)


SAMPLE = Source(
    name="sample",
    what="3,000 train + 1,000 test Fashion-MNIST images embedded in the package (1.7 MB, MIT "
    "licence, made by `scripts/make_sample.py`)",
    load=_read_sample,
    directory=SAMPLE_DIR,
    missing="sample: the embedded sample is missing at {directory}; reinstall the package with "
    "its data files",
)
