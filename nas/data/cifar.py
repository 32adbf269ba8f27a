"""The ``cifar:DIR`` source: CIFAR-10 or CIFAR-100 python-pickle batches.

CIFAR-10 is ``data_batch_*``, ``test_batch`` and ``batches.meta``; CIFAR-100 is
``train``, ``test`` and ``meta`` (fine labels). ``DIR`` may also be the parent of
``cifar-10-batches-py`` or ``cifar-100-python``. The official test batch is the
held-out split.

The batches are pickles (their own distribution format). They are read with
:class:`_RestrictedUnpickler`, which resolves only the few NumPy array
reconstruction helpers (and ``_codecs.encode``) that such files contain and
refuses every other global, so a crafted file cannot run code.
"""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import Dataset, from_arrays
from .errors import DataRuntimeError
from .source import Source

__all__ = ["CIFAR", "CIFAR10_CLASSES", "load_cifar"]

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
        raise DataRuntimeError(f"{label}: cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # any malformed pickle: report, never crash
        reason = str(exc) or type(exc).__name__
        raise DataRuntimeError(f"{label}: {path.name} is not a valid CIFAR batch ({reason})") from None
    if not isinstance(obj, dict):
        raise DataRuntimeError(f"{label}: {path.name} is not a valid CIFAR batch (not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path, label)
    if "data" not in batch or label_key not in batch:
        raise DataRuntimeError(f"{label}: {path.name} lacks the 'data' or '{label_key}' entry")
    try:
        data = np.asarray(batch["data"])
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError) as exc:
        raise DataRuntimeError(f"{label}: {path.name} has malformed entries ({exc})") from None
    if data.dtype != np.uint8 or not (
        (data.ndim == 2 and data.shape[1] == 3072) or (data.ndim == 4 and data.shape[1:] == (3, 32, 32))
    ):
        raise DataRuntimeError(
            f"{label}: {path.name} data is {data.dtype} {data.shape}; expected uint8 [N, 3072]"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "iu":
        raise DataRuntimeError(
            f"{label}: {path.name} holds {data.shape[0]} images but {labels.shape} labels"
        )
    if data.shape[0] == 0:
        raise DataRuntimeError(f"{label}: {path.name} holds no images")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_names(path: Path, label: str, key: str, fallback: Sequence[str]) -> list[str]:
    if not path.is_file():
        return list(fallback)
    meta = _unpickle(path, label)
    names = meta.get(key)
    if not isinstance(names, (list, tuple)) or not names:
        raise DataRuntimeError(f"{label}: {path.name} lacks '{key}'")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar(directory: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Load CIFAR-10 or CIFAR-100 (fine labels) python batches from ``directory``.

    ``directory`` may also be the parent of ``cifar-10-batches-py`` or
    ``cifar-100-python``. The official test batch is the val split.
    """
    directory = Path(directory).expanduser()
    label = name or f"cifar:{directory}"
    if not directory.is_dir():
        raise DataRuntimeError(f"{label}: directory {directory} not found")
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
            raise DataRuntimeError(f"{label}: CIFAR-10 test_batch not found in {directory}")
        parts = [_cifar_batch(p, label, "labels") for p in batches]
        val_x, val_y = _cifar_batch(test, label, "labels")
        names = _cifar_names(directory / "batches.meta", label, "label_names", CIFAR10_CLASSES)
    elif (directory / "train").is_file():
        test = directory / "test"
        if not test.is_file():
            raise DataRuntimeError(f"{label}: CIFAR-100 test file not found in {directory}")
        parts = [_cifar_batch(directory / "train", label, "fine_labels")]
        val_x, val_y = _cifar_batch(test, label, "fine_labels")
        names = _cifar_names(directory / "meta", label, "fine_label_names",
                             [str(i) for i in range(100)])
    else:
        raise DataRuntimeError(
            f"{label}: no CIFAR batches in {directory} (expected data_batch_1..5 and test_batch "
            "for CIFAR-10, or train and test for CIFAR-100)"
        )
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    top = max(int(train_y.max()), int(val_y.max()))
    if min(int(train_y.min()), int(val_y.min())) < 0 or top >= len(names):
        raise DataRuntimeError(f"{label}: labels outside 0..{len(names) - 1}")
    return from_arrays(label, names, train_x, train_y, val_x, val_y)


def _read_cifar(directory: Path, *, name: str, seed: int, val_fraction: float) -> Dataset:
    del seed, val_fraction  # CIFAR brings its own test split
    return load_cifar(directory, name=name)


CIFAR = Source(
    name="cifar",
    what="CIFAR-10/100 python-pickle folders (read with a restricted unpickler that admits only "
    "numpy arrays)",
    load=_read_cifar,
)
