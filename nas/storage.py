"""Optuna study storage, written once for every study of the toolkit (the search, the scaling grid).

A storage is named by a string or given as an object:

* ``":memory:"`` (or None): nothing on disk, no resume (scripts and benchmarks);
* a URL (``sqlite:///study.db``, ``postgresql://...``): handed to Optuna as is;
* any other string or path: an Optuna journal file there (Optuna's advice for one
  machine: several processes may append to it safely, which SQLite does not allow);
* an Optuna storage object: used as is.

:func:`repair_journal` undoes what a process killed in the middle of an append
leaves in a journal file.  Optuna is imported inside the functions, so importing
this module is cheap.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["MEMORY", "is_journal_path", "optuna_storage", "repair_journal"]

MEMORY = ":memory:"


def is_journal_path(storage) -> bool:
    """True when ``storage`` names a journal file (a path, not a URL, not in memory, not an object)."""
    return isinstance(storage, (str, os.PathLike)) and str(storage) != MEMORY and "://" not in str(storage)


def optuna_storage(storage):
    """What ``optuna.create_study(storage=...)`` takes for ``storage`` (see the module docstring)."""
    if storage is None or str(storage) == MEMORY:
        return None
    if not is_journal_path(storage):
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(storage)))


def repair_journal(path: str | os.PathLike) -> bool:
    """Undo what a process killed in the middle of an append leaves behind; True if anything changed.

    Two things: a torn last line (Optuna's reader tolerates one at the very end,
    but not once the next append follows it), and the journal's lock file
    (``<journal>.lock``, a symlink): a killed holder never removes it, and the
    next run would wait Optuna's 30 s grace period before breaking it.  Only call
    this while no other process uses the study (at start-up, before workers).
    """
    p = Path(path)
    changed = False
    lock = Path(str(p) + ".lock")  # optuna.storages.journal: LOCK_FILE_SUFFIX
    if os.path.lexists(lock):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        changed = True
    if not p.is_file() or p.stat().st_size == 0:
        return changed
    with open(p, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return changed
        f.seek(0)
        content = f.read()
        f.truncate(content.rfind(b"\n") + 1)
    return True
