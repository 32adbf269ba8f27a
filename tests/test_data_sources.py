"""One contract suite over every data source of nas.data.SOURCES.

Contract: a source yields uint8 images of the shape its case declares and int64
labels inside its classes, every class in train; loading is deterministic given
the seed (and the seed moves the held-out split exactly when the source has no
split of its own); a malformed string raises DataUsageError, missing, empty or
corrupt data raises DataRuntimeError, and the command line maps the two to exit
2 and exit 1. Format details of each reader are tested in tests/test_data.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nas.data as data
from nas.cli import RuntimeFailure, UsageError, load_data
from nas.data import DataError, DataRuntimeError, DataUsageError, load_dataset, write_idx


@dataclasses.dataclass(frozen=True)
class Case:
    """A small valid instance of one source, and how to break it."""

    source: str  # the --data string
    shape: tuple[int, int, int]  # declared [C, H, W] of every image
    num_classes: int
    own_split: bool  # the held-out split comes from the files, so the seed must not move it
    corrupt: Callable[[], None]  # damages the files in place; loading must then fail at runtime


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _idx_tree(root: Path, n_train: int, n_test: int, classes: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, size, size), dtype=np.uint8))
    write_idx(root / "train-labels-idx1-ubyte.gz", (np.arange(n_train) % classes).astype(np.uint8))
    if n_test:
        write_idx(root / "t10k-images-idx3-ubyte", rng.integers(0, 256, (n_test, size, size), dtype=np.uint8))
        write_idx(root / "t10k-labels-idx1-ubyte", (np.arange(n_test) % classes).astype(np.uint8))
    return root


def _point(monkeypatch: pytest.MonkeyPatch, name: str, directory: Path) -> None:
    """Make the fixed source ``name`` read ``directory`` for this test."""
    monkeypatch.setitem(data.SOURCES, name, dataclasses.replace(data.SOURCES[name], directory=directory))


def _sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    def corrupt() -> None:
        copy = tmp_path / "sample-copy"
        shutil.copytree(data.SAMPLE_DIR, copy)
        _truncate(copy / "train-images-idx3-ubyte.gz")
        _point(monkeypatch, "sample", copy)

    # the real embedded files: they ship with the package, so every machine has them
    return Case("sample", (1, 28, 28), 10, own_split=True, corrupt=corrupt)


def _fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    # a small stand-in at the registered location: CI has no Debian package, and the
    # real 70,000 images are checked by tests/test_data.py::test_fashion_mnist when present
    root = _idx_tree(tmp_path / "fashion-mnist", n_train=60, n_test=20, classes=10, size=28)
    _point(monkeypatch, "fashion-mnist", root)
    return Case("fashion-mnist", (1, 28, 28), 10, own_split=True,
                corrupt=lambda: _truncate(root / "t10k-images-idx3-ubyte"))


def _idx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    root = _idx_tree(tmp_path / "idx", n_train=90, n_test=0, classes=4, size=9)
    return Case(f"idx:{root}", (1, 9, 9), 4, own_split=False,
                corrupt=lambda: _truncate(root / "train-labels-idx1-ubyte.gz"))


def _folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for name in ("ant", "bee", "cow"):
        (root / name).mkdir(parents=True)
        for i in range(8):
            # 12 high, 10 wide: stored square at the first image's long side
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return Case(f"folder:{root}", (3, 12, 12), 3, own_split=False,
                corrupt=lambda: (root / "bee" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken"))


def _cifar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    root = tmp_path / "cifar"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 30), ("data_batch_2", 30), ("test_batch", 20)):
        batch = {"labels": [i % 10 for i in range(n)], "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return Case(f"cifar:{root}", (3, 32, 32), 10, own_split=True,
                corrupt=lambda: _truncate(root / "data_batch_2"))


CASES: dict[str, Callable[[Path, pytest.MonkeyPatch], Case]] = {
    "sample": _sample,
    "fashion-mnist": _fashion_mnist,
    "idx": _idx,
    "folder": _folder,
    "cifar": _cifar,
}


@pytest.fixture(params=sorted(data.SOURCES))
def case(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Case:
    if request.param not in CASES:
        pytest.fail(f"data source {request.param!r} has no contract case in CASES")
    return CASES[request.param](tmp_path, monkeypatch)


def _tensors(ds: data.Dataset) -> tuple[torch.Tensor, ...]:
    return ds.train_x, ds.train_y, ds.val_x, ds.val_y


def _kind(call: Callable[[], object]) -> type[DataError]:
    with pytest.raises(DataError) as info:
        call()
    assert str(info.value) and "\n" not in str(info.value)
    return type(info.value)


# --------------------------------------------------------------------------- #
# the registry
# --------------------------------------------------------------------------- #


def test_every_source_has_a_case() -> None:
    assert set(CASES) == set(data.SOURCES)


def test_source_forms_come_from_the_registry() -> None:
    # the order is the one help texts and error messages have always listed
    assert data.SOURCE_FORMS == ("sample", "fashion-mnist", "idx:DIR", "folder:DIR", "cifar:DIR")
    assert data.SOURCE_FORMS == tuple(s.form for s in data.SOURCES.values())
    assert all(name == s.name for name, s in data.SOURCES.items())
    fixed = [s for s in data.SOURCES.values() if s.directory is not None]
    assert all("{directory}" in s.missing for s in fixed)


# --------------------------------------------------------------------------- #
# the contract, once per source
# --------------------------------------------------------------------------- #


def test_images_and_labels(case: Case) -> None:
    ds = load_dataset(case.source, seed=0)
    assert ds.name == case.source
    assert ds.num_classes == case.num_classes == len(ds.classes)
    assert ds.num_train > 0 and ds.num_val > 0
    for x, y in ((ds.train_x, ds.train_y), (ds.val_x, ds.val_y)):
        assert x.dtype == torch.uint8 and tuple(x.shape[1:]) == case.shape
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert int(y.min()) >= 0 and int(y.max()) < case.num_classes
    assert torch.bincount(ds.train_y, minlength=case.num_classes).min() > 0
    # random-looking pixels: a reader that dropped or zeroed a channel or a row would show
    assert int(ds.train_x.max()) > 200 and int(ds.train_x.min()) < 50
    x, y = next(iter(ds.loader(batch_size=3, resolution=16, channels=3, seed=0)))
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32 and bool(x.isfinite().all())
    assert y.dtype == torch.int64 and int(y.max()) < case.num_classes


def test_deterministic_given_a_seed(case: Case) -> None:
    a = load_dataset(case.source, seed=0)
    b = load_dataset(case.source, seed=0)
    assert a.classes == b.classes
    assert all(torch.equal(s, t) for s, t in zip(_tensors(a), _tensors(b), strict=True))
    xa, ya = next(iter(a.loader(batch_size=8, resolution=12, seed=3)))
    xb, yb = next(iter(b.loader(batch_size=8, resolution=12, seed=3)))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = load_dataset(case.source, seed=1)
    # the seed picks the held-out images only where the files do not
    assert torch.equal(a.val_x, other.val_x) == case.own_split


def test_malformed_strings_are_usage_errors(case: Case) -> None:
    name = case.source.partition(":")[0]
    entry = data.SOURCES[name]
    if entry.directory is None:
        assert _kind(lambda: load_dataset(f"{name}:")) is DataUsageError
        assert _kind(lambda: load_dataset(f"{name}:   ")) is DataUsageError
        assert _kind(lambda: load_dataset(name)) is DataUsageError
    else:
        assert _kind(lambda: load_dataset(f"{name}:/somewhere")) is DataUsageError
    assert _kind(lambda: load_dataset(name.upper() + "x")) is DataUsageError
    assert _kind(lambda: load_dataset(case.source, val_fraction=0.0)) is DataUsageError


def test_missing_or_empty_data_are_runtime_errors(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = case.source.partition(":")[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    for where in (tmp_path / "absent", empty):
        if data.SOURCES[name].directory is None:
            assert _kind(lambda: load_dataset(f"{name}:{where}")) is DataRuntimeError
        else:
            _point(monkeypatch, name, where)
            assert _kind(lambda: load_dataset(name)) is DataRuntimeError


def test_corrupt_data_is_a_runtime_error(case: Case) -> None:
    assert load_dataset(case.source).num_train > 0
    case.corrupt()
    assert _kind(lambda: load_dataset(case.source)) is DataRuntimeError


def test_the_command_line_maps_kinds_to_exit_codes(case: Case, tmp_path: Path) -> None:
    """Usage errors become UsageError (exit 2), runtime ones RuntimeFailure (exit 1)."""
    name = case.source.partition(":")[0]
    malformed = f"{name}:" if data.SOURCES[name].directory is None else f"{name}:/x"
    with pytest.raises(UsageError):
        load_data(malformed)
    case.corrupt()
    with pytest.raises(RuntimeFailure):
        load_data(case.source)


# --------------------------------------------------------------------------- #
# same bytes
# --------------------------------------------------------------------------- #


def _sha256(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_sample_bytes_are_pinned() -> None:
    """The embedded sample and a seeded subset of it, byte for byte.

    Measured from the single-module nas/data.py (commit 2613323) before it became a
    package, and unchanged since; a change here changes every search on ``sample``.
    """
    ds = load_dataset("sample")
    assert _sha256(*_tensors(ds)) == "90b653ebedd61d7fabd90294ca43a704c389a0c593c690824f3811398a7efe5d"
    sub = ds.subset(320, 160, seed=0)
    assert _sha256(*_tensors(sub)) == "84a8b109d5ae5780f16951813394c797e5b245453cd4bb970b2466d9654d4b0a"
