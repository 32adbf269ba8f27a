"""The registry of data sources and :func:`load_dataset`, which reads a ``--data`` string.

A source string is a registered name alone (``sample``, ``fashion-mnist``: the
data sits at a fixed place) or ``name:DIR`` (``idx``, ``folder``, ``cifar``).
Adding a source is one module declaring a :class:`~nas.data.source.Source` and
one line in :data:`SOURCES`; its contract case in ``tests/test_data_sources.py``
then checks it like every other source.
"""

from __future__ import annotations

from pathlib import Path

from .cifar import CIFAR
from .dataset import Dataset
from .errors import DataRuntimeError, DataUsageError
from .folder import FOLDER
from .idx import FASHION_MNIST, IDX
from .sample import SAMPLE
from .sampling import check_fraction
from .source import Source

__all__ = ["SOURCES", "SOURCE_FORMS", "load_dataset"]

SOURCES: dict[str, Source] = {s.name: s for s in (SAMPLE, FASHION_MNIST, IDX, FOLDER, CIFAR)}
"""Every data source by name, in the order help texts list them."""

SOURCE_FORMS = tuple(s.form for s in SOURCES.values())
"""The valid forms of a data source string (``"sample"``, ..., ``"idx:DIR"``, ...)."""


def load_dataset(source: str, seed: int = 0, val_fraction: float = 0.1) -> Dataset:
    """Load a dataset from a source string (one of :data:`SOURCE_FORMS`).

    ``seed`` and ``val_fraction`` only matter for sources without their own
    test split. A malformed string or argument raises
    :class:`~nas.data.errors.DataUsageError`; data that is missing, empty,
    unreadable or corrupt raises :class:`~nas.data.errors.DataRuntimeError`;
    both carry a one-line message.
    """
    check_fraction(val_fraction)
    text = source.strip()
    name, colon, argument = text.partition(":")
    entry = SOURCES.get(name)
    # a fixed source followed by ":..." is as unknown as a misspelled one
    if entry is None or bool(colon) != (entry.directory is None):
        forms = ", ".join(s.form for s in SOURCES.values())
        raise DataUsageError(f"unknown data source {source!r}; valid forms: {forms}")
    if entry.directory is None:
        if not argument.strip():
            raise DataUsageError(f"{name}: needs a directory, e.g. {name}:/path/to/data")
        directory = Path(argument.strip())
    else:
        directory = entry.directory
        if not directory.is_dir():
            raise DataRuntimeError(entry.missing.format(directory=directory))
    return entry.load(directory, name=text, seed=seed, val_fraction=val_fraction)
