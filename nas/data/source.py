"""What a data source is: the one record the registry (:mod:`nas.data.registry`) holds per source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .dataset import Dataset

__all__ = ["Reader", "Source"]


class Reader(Protocol):
    """Reads the data at ``directory`` into a :class:`Dataset` named ``name``.

    ``seed`` and ``val_fraction`` matter only to sources without a test split of
    their own. Problems with the data raise
    :class:`~nas.data.errors.DataRuntimeError`.
    """

    def __call__(self, directory: Path, *, name: str, seed: int, val_fraction: float) -> Dataset: ...


@dataclass(frozen=True)
class Source:
    """One kind of ``--data`` string: ``name`` alone, or ``name:DIR``.

    Attributes:
        name: the word before the colon (or the whole string).
        what: one line for help texts and the data table in docs/training.md.
        load: the reader (see :class:`Reader`).
        directory: where a fixed source's data lives; ``None`` when the string
            names it (``name:DIR``).
        missing: for a fixed source, the message when ``directory`` is absent;
            ``{directory}`` is filled in.
    """

    name: str
    what: str
    load: Reader
    directory: Path | None = None
    missing: str = ""

    @property
    def form(self) -> str:
        """How the source is written: ``"sample"`` or ``"idx:DIR"``."""
        return self.name if self.directory is not None else f"{self.name}:DIR"
