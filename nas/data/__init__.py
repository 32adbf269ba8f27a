"""Image-classification datasets held in memory, never downloaded.

Sources (the ``--data`` strings understood by :func:`load_dataset`; the registry
is :data:`SOURCES`)::

    sample          small stratified Fashion-MNIST subset shipped in nas/_sample/
                    (3000 train + 1000 test, 28x28 grey, 10 classes)
    fashion-mnist   idx:/usr/share/datasets/fashion-mnist (Debian package
                    dataset-fashion-mnist)
    idx:DIR         MNIST-format IDX files, plain or gzipped
    folder:DIR      ImageFolder tree, one subfolder per class
    cifar:DIR       CIFAR-10 or CIFAR-100 python-pickle batches

One module per job:

    errors      DataError, and its two kinds: DataUsageError, DataRuntimeError
    sampling    seeded class-stratified draws and held-out splits
    dataset     Dataset (uint8 images in memory) and Loader (normalized batches)
    source      Source: what the registry holds per source
    sample, idx, folder, cifar
                one module per source format
    registry    SOURCES, SOURCE_FORMS and load_dataset

The held-out ``val`` split is the source's own test split when it has one (IDX
``t10k``, CIFAR ``test_batch``/``test``, folder ``val/``); otherwise a seeded
split stratified by class holds out ``val_fraction`` of every class (at least
one image of each class with two or more images). Everything is deterministic
given the seeds.

Problems with the data raise :class:`DataError`, whose message is one
user-facing line: :class:`DataUsageError` for a malformed request,
:class:`DataRuntimeError` for data that cannot be read. Invalid arguments to
:class:`Dataset` methods raise ``ValueError``.

The constants below are re-exported for reading; code (and tests) that must
change one sets it on its home module (e.g. ``nas.data.dataset.CACHE_LIMIT_BYTES``)
or replaces a registry entry (``SOURCES["sample"]``).
"""

from __future__ import annotations

from .cifar import CIFAR10_CLASSES, load_cifar
from .dataset import CACHE_LIMIT_BYTES, SPLITS, Dataset, Loader
from .errors import DataError, DataRuntimeError, DataUsageError
from .folder import FOLDER_MAX_SIDE, load_folder
from .idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_idx, read_idx, write_idx
from .registry import SOURCE_FORMS, SOURCES, load_dataset
from .sample import SAMPLE_DIR
from .sampling import stratified_indices
from .source import Source

__all__ = [
    "CACHE_LIMIT_BYTES",
    "CIFAR10_CLASSES",
    "DataError",
    "DataRuntimeError",
    "DataUsageError",
    "Dataset",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FOLDER_MAX_SIDE",
    "Loader",
    "SAMPLE_DIR",
    "SOURCES",
    "SOURCE_FORMS",
    "SPLITS",
    "Source",
    "load_cifar",
    "load_dataset",
    "load_folder",
    "load_idx",
    "read_idx",
    "stratified_indices",
    "write_idx",
]
