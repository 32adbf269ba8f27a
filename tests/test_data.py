"""Tests for nas.data: every source format, built from small files in tmp_path.

The contract every registered source meets is in tests/test_data_sources.py.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import nas.data as data
import nas.data.dataset
from nas.data import DataError, DataRuntimeError, DataUsageError, Dataset, load_dataset, read_idx, write_idx

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def raises_one_line(
    call: Callable[[], object], *fragments: str, kind: type[DataError] = DataRuntimeError
) -> str:
    """Assert ``call`` raises ``kind`` with a one-line message holding ``fragments``."""
    with pytest.raises(kind) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def make_images(n: int, size: int = 8, channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels == 1 else (n, size, size, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def make_labels(n: int, classes: int) -> np.ndarray:
    return (np.arange(n) % classes).astype(np.uint8)


def write_idx_dir(
    directory: Path, n_train: int = 60, n_test: int = 20, classes: int = 3,
    size: int = 8, gz: bool = False, test: bool = True,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    write_idx(directory / f"train-images-idx3-ubyte{suffix}", make_images(n_train, size))
    write_idx(directory / f"train-labels-idx1-ubyte{suffix}", make_labels(n_train, classes))
    if test:
        write_idx(directory / f"t10k-images-idx3-ubyte{suffix}", make_images(n_test, size, seed=1))
        write_idx(directory / f"t10k-labels-idx1-ubyte{suffix}", make_labels(n_test, classes))
    return directory


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_folder(
    root: Path, classes: tuple[str, ...] = ("cat", "dog", "eel"), per_class: int = 10,
    size: int = 12, colour: bool = True,
) -> Path:
    rng = np.random.default_rng(0)
    for name in classes:
        for i in range(per_class):
            shape = (size, size, 3) if colour else (size, size)
            save_png(root / name / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def write_cifar10(directory: Path, per_batch: int = 10, batches: int = 5, protocol: int = 2) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for b in range(1, batches + 1):
        batch = {
            "batch_label": f"training batch {b} of {batches}",
            "labels": [int(i % 10) for i in range(per_batch)],
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"img{b}_{i}.png" for i in range(per_batch)],
        }
        (directory / f"data_batch_{b}").write_bytes(pickle.dumps(batch, protocol=protocol))
    test = {"labels": list(range(10)), "data": rng.integers(0, 256, (10, 3072), dtype=np.uint8)}
    (directory / "test_batch").write_bytes(pickle.dumps(test, protocol=protocol))
    meta = {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072}
    (directory / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return directory


def write_cifar100(directory: Path, n_train: int = 200, n_test: int = 100) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"fine_labels": np.arange(n, dtype=np.int64) % 100,
            b"coarse_labels": [i % 20 for i in range(n)],
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)]}
    (directory / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return directory


def tiny_dataset(n_train: int = 40, n_val: int = 20, classes: int = 4, channels: int = 1,
                 size: int = 8) -> Dataset:
    rng = np.random.default_rng(3)
    return Dataset(
        name="tiny",
        classes=[f"k{i}" for i in range(classes)],
        train_x=torch.from_numpy(rng.integers(0, 256, (n_train, channels, size, size), dtype=np.uint8)),
        train_y=torch.arange(n_train, dtype=torch.int64) % classes,
        val_x=torch.from_numpy(rng.integers(0, 256, (n_val, channels, size, size), dtype=np.uint8)),
        val_y=torch.arange(n_val, dtype=torch.int64) % classes,
    )


# --------------------------------------------------------------------------- #
# IDX
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["a-idx", "a-idx.gz"])
def test_idx_roundtrip(tmp_path: Path, dtype: type, name: str) -> None:
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype is np.uint8:
        array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    write_idx(tmp_path / name, array)
    raw = (tmp_path / name).read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = read_idx(tmp_path / name)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian(tmp_path: Path) -> None:
    write_idx(tmp_path / "x", np.zeros((258, 2, 3), dtype=np.uint8))
    raw = (tmp_path / "x").read_bytes()
    assert raw[:4] == bytes([0, 0, 0x08, 3])
    assert raw[4:8] == (258).to_bytes(4, "big")
    assert len(raw) == 4 + 12 + 258 * 6


@pytest.mark.parametrize("gz", [False, True])
def test_idx_with_test_split(tmp_path: Path, gz: bool) -> None:
    root = write_idx_dir(tmp_path / "d", n_train=60, n_test=21, gz=gz)
    ds = load_dataset(f"idx:{root}")
    assert ds.name == f"idx:{root}"
    assert ds.train_x.shape == (60, 1, 8, 8) and ds.train_x.dtype == torch.uint8
    assert ds.val_x.shape == (21, 1, 8, 8)
    assert ds.train_y.dtype == torch.int64 and ds.val_y.dtype == torch.int64
    assert ds.classes == ["0", "1", "2"] and ds.num_classes == 3
    assert ds.in_channels == 1 and ds.resolution == 8 and ds.image_size == (8, 8)
    np.testing.assert_array_equal(ds.train_x[:, 0].numpy(), make_images(60))
    np.testing.assert_array_equal(ds.val_y.numpy(), make_labels(21, 3))


def test_idx_classes_txt_and_dotted_names(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    write_idx(root / "train-images.idx3-ubyte", make_images(30))
    write_idx(root / "train-labels.idx1-ubyte", make_labels(30, 3))
    (root / "classes.txt").write_text("alpha\nbeta\ngamma\n\n", encoding="utf-8")
    ds = load_dataset(f"idx:{root}")
    assert ds.classes == ["alpha", "beta", "gamma"]
    (root / "classes.txt").write_text("alpha\nbeta\n", encoding="utf-8")
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "classes.txt")


def test_idx_without_test_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = write_idx_dir(tmp_path / "d", n_train=100, classes=4, test=False)
    a = load_dataset(f"idx:{root}", seed=1, val_fraction=0.2)
    b = load_dataset(f"idx:{root}", seed=1, val_fraction=0.2)
    c = load_dataset(f"idx:{root}", seed=2, val_fraction=0.2)
    assert a.num_train == 80 and a.num_val == 20
    assert np.bincount(a.val_y.numpy()).tolist() == [5, 5, 5, 5]
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    # train and val are disjoint and together the whole file
    rows = {bytes(r) for r in a.train_x.flatten(1).numpy()} | {bytes(r) for r in a.val_x.flatten(1).numpy()}
    assert len(rows) == 100


def write_raw(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


def test_idx_errors(tmp_path: Path) -> None:
    raises_one_line(lambda: load_dataset(f"idx:{tmp_path / 'nope'}"), "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_one_line(lambda: load_dataset(f"idx:{empty}"), "train-images-idx3-ubyte", "not found")

    root = write_idx_dir(tmp_path / "d", test=False)
    images = root / "train-images-idx3-ubyte"
    labels = root / "train-labels-idx1-ubyte"
    good = images.read_bytes()

    write_raw(images, b"\x08\x03" + good[2:])
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "magic")
    write_raw(images, good[:3])
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "magic")
    write_raw(images, good[:10])
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "truncated")
    write_raw(images, good[:-5])
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "truncated", images.name)
    write_raw(images, good + b"xx")
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "corrupt")
    write_idx(images, np.zeros((60, 8, 8), dtype=np.float32))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "unsigned bytes")
    write_idx(images, np.zeros((60, 64), dtype=np.uint8))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "expected [N, H, W]")
    write_idx(images, np.zeros((0, 8, 8), dtype=np.uint8))
    write_idx(labels, np.zeros((0,), dtype=np.uint8))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "no images")

    write_idx(images, make_images(60))
    write_idx(labels, make_labels(59, 3))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "60 images", "59 labels")
    write_idx(labels, -np.ones(60, dtype=np.int8))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "negative")
    write_idx(labels, make_labels(60, 3))
    assert load_dataset(f"idx:{root}").num_train > 0

    # a lone t10k file without its pair
    write_idx(root / "t10k-images-idx3-ubyte", make_images(5))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "t10k-labels-idx1-ubyte")
    write_idx(root / "t10k-labels-idx1-ubyte", make_labels(5, 3))
    write_idx(root / "t10k-images-idx3-ubyte", make_images(5, size=9))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "t10k images")


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    root = write_idx_dir(tmp_path / "d", gz=True, test=False)
    path = root / "train-images-idx3-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "gzip", path.name)
    path.write_bytes(good[:10] + bytes(len(good) - 10))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "gzip")
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\x00" * 3))
    raises_one_line(lambda: load_dataset(f"idx:{root}"), "truncated")


# --------------------------------------------------------------------------- #
# ImageFolder
# --------------------------------------------------------------------------- #


def test_folder_with_train_val(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", per_class=6, size=12)
    write_folder(tmp_path / "val", classes=("cat", "eel"), per_class=2, size=20)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.classes == ["cat", "dog", "eel"]
    assert ds.train_x.shape == (18, 3, 12, 12) and ds.val_x.shape == (4, 3, 12, 12)
    assert np.bincount(ds.train_y.numpy()).tolist() == [6, 6, 6]
    assert sorted(ds.val_y.tolist()) == [0, 0, 2, 2]
    # pixel values survive for same-size images
    first = np.asarray(Image.open(tmp_path / "train" / "cat" / "000.png"))
    np.testing.assert_array_equal(ds.train_x[0].permute(1, 2, 0).numpy(), first)


def test_folder_split_grey_and_size_cap(tmp_path: Path) -> None:
    write_folder(tmp_path, classes=("a", "b"), per_class=10, size=100, colour=False)
    (tmp_path / "a" / "notes.txt").write_text("ignored", encoding="utf-8")
    ds = load_dataset(f"folder:{tmp_path}", seed=0, val_fraction=0.2)
    assert ds.in_channels == 1
    assert ds.image_size == (data.FOLDER_MAX_SIDE, data.FOLDER_MAX_SIDE)
    assert ds.num_train == 16 and ds.num_val == 4
    assert np.bincount(ds.val_y.numpy()).tolist() == [2, 2]
    again = load_dataset(f"folder:{tmp_path}", seed=0, val_fraction=0.2)
    assert torch.equal(ds.val_x, again.val_x)


def test_folder_mixed_modes_become_rgb(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", classes=("a", "b"), per_class=3, size=10, colour=False)
    rgba = np.full((10, 10, 4), 200, dtype=np.uint8)
    save_png(tmp_path / "train" / "b" / "zz.png", rgba)
    ds = load_dataset(f"folder:{tmp_path}", val_fraction=0.3)
    assert ds.in_channels == 3
    grey = ds.train_x[ds.train_y == 0]
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])


def test_folder_tiny_classes_keep_a_train_example(tmp_path: Path) -> None:
    write_folder(tmp_path, classes=("a", "b"), per_class=2, size=6)
    save_png(tmp_path / "c" / "only.png", np.zeros((6, 6, 3), dtype=np.uint8))
    ds = load_dataset(f"folder:{tmp_path}", val_fraction=0.1)
    assert sorted(ds.val_y.tolist()) == [0, 1]
    assert sorted(ds.train_y.tolist()) == [0, 1, 2]


def test_folder_errors(tmp_path: Path) -> None:
    raises_one_line(lambda: load_dataset(f"folder:{tmp_path / 'missing'}"), "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_one_line(lambda: load_dataset(f"folder:{empty}"), "no class subfolders")

    empty_class = write_folder(tmp_path / "ec", classes=("a", "b"), per_class=2)
    (empty_class / "c").mkdir()
    raises_one_line(lambda: load_dataset(f"folder:{empty_class}"), "holds no images", "c")

    single = write_folder(tmp_path / "single", classes=("only",), per_class=3)
    raises_one_line(lambda: load_dataset(f"folder:{single}"), "one class")

    bad = write_folder(tmp_path / "bad", classes=("a", "b"), per_class=2)
    broken = bad / "b" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    message = raises_one_line(lambda: load_dataset(f"folder:{bad}"), "cannot read image")
    assert str(broken) in message

    ones = write_folder(tmp_path / "ones", classes=("a", "b"), per_class=1)
    raises_one_line(lambda: load_dataset(f"folder:{ones}"), "too few images")

    split = tmp_path / "split"
    write_folder(split / "train", classes=("a", "b"), per_class=2)
    write_folder(split / "val", classes=("a", "zebra"), per_class=1)
    raises_one_line(lambda: load_dataset(f"folder:{split}"), "zebra")


# --------------------------------------------------------------------------- #
# CIFAR
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10(tmp_path: Path, protocol: int) -> None:
    root = write_cifar10(tmp_path / "cifar-10-batches-py", protocol=protocol)
    ds = load_dataset(f"cifar:{root}")
    assert ds.classes == [f"c{i}" for i in range(10)]
    assert ds.train_x.shape == (50, 3, 32, 32) and ds.val_x.shape == (10, 3, 32, 32)
    assert ds.val_y.tolist() == list(range(10))
    raw = pickle.loads((root / "data_batch_1").read_bytes())["data"]
    np.testing.assert_array_equal(ds.train_x[0].numpy().reshape(-1), raw[0])
    # the parent directory of cifar-10-batches-py works too
    assert load_dataset(f"cifar:{tmp_path}").num_train == 50


def test_cifar_numpy1_pickles(tmp_path: Path) -> None:
    """Real CIFAR files name NumPy 1's numpy.core.multiarray helpers."""
    root = write_cifar10(tmp_path / "c", batches=1, protocol=2)
    for path in root.iterdir():
        raw = path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        path.write_bytes(raw)
    assert b"numpy.core.multiarray" in (root / "data_batch_1").read_bytes()
    assert load_dataset(f"cifar:{root}").num_train == 10


def test_cifar10_without_meta_uses_standard_names(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "c", batches=2)
    (root / "batches.meta").unlink()
    ds = load_dataset(f"cifar:{root}")
    assert ds.classes == list(data.CIFAR10_CLASSES) and ds.num_train == 20


def test_cifar100(tmp_path: Path) -> None:
    root = write_cifar100(tmp_path / "cifar-100-python")
    ds = load_dataset(f"cifar:{root}")
    assert ds.num_classes == 100 and ds.classes[:2] == ["f0", "f1"]
    assert ds.train_x.shape == (200, 3, 32, 32) and ds.val_x.shape == (100, 3, 32, 32)
    assert ds.train_y.max().item() == 99


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_cifar_errors(tmp_path: Path) -> None:
    raises_one_line(lambda: load_dataset(f"cifar:{tmp_path / 'missing'}"), "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    raises_one_line(lambda: load_dataset(f"cifar:{empty}"), "data_batch_", "test_batch", "train")

    no_test = write_cifar10(tmp_path / "nt", batches=1)
    (no_test / "test_batch").unlink()
    raises_one_line(lambda: load_dataset(f"cifar:{no_test}"), "test_batch")

    no_test100 = write_cifar100(tmp_path / "nt100")
    (no_test100 / "test").unlink()
    raises_one_line(lambda: load_dataset(f"cifar:{no_test100}"), "test")

    evil = write_cifar10(tmp_path / "evil", batches=1)
    (evil / "data_batch_1").write_bytes(pickle.dumps({"data": _Evil(), "labels": []}))
    raises_one_line(lambda: load_dataset(f"cifar:{evil}"), "forbidden global", "system")

    corrupt = write_cifar10(tmp_path / "corrupt", batches=1)
    good = (corrupt / "data_batch_1").read_bytes()
    (corrupt / "data_batch_1").write_bytes(good[: len(good) // 2])
    raises_one_line(lambda: load_dataset(f"cifar:{corrupt}"), "data_batch_1")
    (corrupt / "data_batch_1").write_bytes(b"garbage")
    raises_one_line(lambda: load_dataset(f"cifar:{corrupt}"), "data_batch_1")
    (corrupt / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3]))
    raises_one_line(lambda: load_dataset(f"cifar:{corrupt}"), "not a dict")

    shape = write_cifar10(tmp_path / "shape", batches=1)
    batch = {"data": np.zeros((4, 100), dtype=np.uint8), "labels": [0, 1, 2, 3]}
    (shape / "data_batch_1").write_bytes(pickle.dumps(batch))
    raises_one_line(lambda: load_dataset(f"cifar:{shape}"), "expected uint8 [N, 3072]")
    batch = {"data": np.zeros((4, 3072), dtype=np.uint8), "labels": [0, 1]}
    (shape / "data_batch_1").write_bytes(pickle.dumps(batch))
    raises_one_line(lambda: load_dataset(f"cifar:{shape}"), "4 images")
    batch = {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [0, 10]}
    (shape / "data_batch_1").write_bytes(pickle.dumps(batch))
    raises_one_line(lambda: load_dataset(f"cifar:{shape}"), "labels outside")


# --------------------------------------------------------------------------- #
# loaders, batches, subsets
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("in_channels", "channels", "resolution"),
    [(1, 1, 8), (1, 3, 16), (3, 3, 5), (3, 1, 12), (1, 2, 8)],
)
def test_loader_shapes_and_channel_adaptation(in_channels: int, channels: int, resolution: int) -> None:
    ds = tiny_dataset(n_train=30, channels=in_channels)
    loader = ds.loader("train", batch_size=8, resolution=resolution, channels=channels)
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and loader.num_examples == 30
    assert [x.shape[0] for x, _ in batches] == [8, 8, 8, 6]
    for x, y in batches:
        assert x.shape[1:] == (channels, resolution, resolution)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.is_contiguous()
        if in_channels == 1 and channels > 1:
            assert all(torch.equal(x[:, 0], x[:, c]) for c in range(channels))
    ys = torch.cat([y for _, y in batches])
    assert sorted(ys.tolist()) == sorted(ds.train_y.tolist())


def test_rgb_to_grey_is_the_channel_average() -> None:
    ds = tiny_dataset(channels=3)
    x, y = ds.batch(batch_size=len(ds.train_y), resolution=8, channels=1, seed=0)
    mean, std = ds.normalization(1)
    grey = ds.train_x.float().div(255).mean(1, keepdim=True)
    # batch() permutes the examples; match them up through the labels-and-pixels pairs
    restored = x * std[0] + mean[0]
    for image, label in zip(restored, y, strict=True):
        distances = (grey - image).abs().flatten(1).amax(1)
        match = int(distances.argmin())
        assert distances[match] < 1e-5 and ds.train_y[match] == label


def test_unsupported_channel_adaptation() -> None:
    ds = tiny_dataset(channels=3)
    with pytest.raises(ValueError, match="cannot adapt"):
        ds.loader(channels=2)


def test_normalization_uses_train_stats() -> None:
    ds = tiny_dataset(n_train=64, channels=3, size=8)
    x = torch.cat([x for x, _ in ds.loader("train", batch_size=16, resolution=8, channels=3)])
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    mean, std = ds.normalization(3)
    train = ds.train_x.double() / 255
    assert mean == pytest.approx(train.mean(dim=(0, 2, 3)).tolist(), abs=1e-6)
    assert std == pytest.approx(train.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-6)
    # val is normalized with the train statistics, not its own
    v, _ = next(iter(ds.loader("val", batch_size=100, resolution=8, shuffle=False)))
    expected = (ds.val_x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)


def test_resize_is_bilinear_and_cached() -> None:
    ds = tiny_dataset(channels=1, size=8)
    loader = ds.loader("val", batch_size=1000, resolution=16, channels=1, shuffle=False)
    (x, _), = list(loader)
    mean, std = ds.normalization(1)
    expected = torch.nn.functional.interpolate(ds.val_x.float() / 255, size=(16, 16), mode="bilinear",
                                               align_corners=False)
    torch.testing.assert_close(x * std[0] + mean[0], expected, atol=1e-5, rtol=0)
    cached = loader._x
    again = ds.loader("val", batch_size=7, resolution=16, channels=3, shuffle=True)
    assert again._x is cached  # grey -> 3 channels reuses the 1-channel cache
    ds.clear_cache()
    assert ds.loader("val", resolution=16, channels=1)._x is not cached


def test_loader_without_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = tiny_dataset(channels=3)
    cached = [x for x, _ in ds.loader("train", batch_size=8, resolution=20, seed=4)]
    ds.clear_cache()
    # the limit is read where the loader lives, not from the re-export in nas.data
    monkeypatch.setattr(nas.data.dataset, "CACHE_LIMIT_BYTES", 0)
    loader = ds.loader("train", batch_size=8, resolution=20, seed=4)
    assert loader._x is None
    for a, (b, _) in zip(cached, loader, strict=True):
        torch.testing.assert_close(a, b)


def test_loader_is_deterministic_and_epochs_differ() -> None:
    ds = tiny_dataset(n_train=40)
    first = ds.loader(batch_size=10, resolution=8, seed=5)
    second = ds.loader(batch_size=10, resolution=8, seed=5)
    e0 = [y for _, y in first]
    e1 = [y for _, y in first]
    assert all(torch.equal(a, b) for a, b in zip(e0, [y for _, y in second], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1, strict=True))
    other = [y for _, y in ds.loader(batch_size=10, resolution=8, seed=6)]
    assert not all(torch.equal(a, b) for a, b in zip(e0, other, strict=True))
    plain = [y for _, y in ds.loader(batch_size=10, resolution=8, shuffle=False)]
    assert torch.equal(torch.cat(plain), ds.train_y)


def test_loader_limit_and_drop_last() -> None:
    ds = tiny_dataset(n_train=40, classes=4)
    loader = ds.loader(batch_size=6, resolution=8, limit=12, seed=1, drop_last=True)
    assert loader.num_examples == 12 and len(loader) == 2
    ys = torch.cat([y for _, y in loader])
    assert np.bincount(ys.numpy(), minlength=4).tolist() == [3, 3, 3, 3]
    same = torch.cat([y for _, y in ds.loader(batch_size=6, resolution=8, limit=12, seed=1)])
    assert torch.equal(ys, same)
    assert ds.loader(batch_size=6, limit=1000).num_examples == 40
    assert len(ds.loader(batch_size=16, drop_last=True)) == 2
    with pytest.raises(ValueError):
        ds.loader(limit=0)
    with pytest.raises(ValueError):
        ds.loader(batch_size=0)
    with pytest.raises(ValueError):
        ds.loader(split="test")


def test_batch_is_stratified_and_seeded() -> None:
    ds = tiny_dataset(n_train=40, classes=4, channels=1)
    x, y = ds.batch("train", batch_size=8, resolution=10, channels=3, seed=2)
    assert x.shape == (8, 3, 10, 10) and y.dtype == torch.int64
    assert np.bincount(y.numpy(), minlength=4).tolist() == [2, 2, 2, 2]
    x2, y2 = ds.batch("train", batch_size=8, resolution=10, channels=3, seed=2)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = ds.batch("train", batch_size=8, resolution=10, channels=3, seed=3)
    assert not torch.equal(x, x3)
    xs, _ = ds.batch("val", batch_size=500)
    assert xs.shape[0] == ds.num_val


def test_subset() -> None:
    ds = tiny_dataset(n_train=40, n_val=20, classes=4)
    sub = ds.subset(12, 8, seed=0)
    assert sub.num_train == 12 and sub.num_val == 8 and sub.classes == ds.classes
    assert np.bincount(sub.train_y.numpy()).tolist() == [3, 3, 3, 3]
    assert np.bincount(sub.val_y.numpy()).tolist() == [2, 2, 2, 2]
    again = ds.subset(12, 8, seed=0)
    assert torch.equal(sub.train_x, again.train_x)
    assert ds.subset(12, seed=0).num_val == 20
    assert ds.subset(10_000, 0).num_train == 40
    assert ds.subset(5, 0).num_val == 0
    with pytest.raises(ValueError):
        ds.subset(0)


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=2**31),
    data_=st.data(),
)
def test_stratified_indices_give_each_class_its_share(
    counts: list[int], seed: int, data_: st.DataObject
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(0).shuffle(labels)
    n = data_.draw(st.integers(min_value=0, max_value=labels.shape[0] + 3))
    chosen = data.stratified_indices(labels, n, seed)
    assert chosen.shape[0] == min(n, labels.shape[0])
    assert np.all(np.diff(chosen) > 0)
    got = np.bincount(labels[chosen], minlength=len(counts))
    expected = min(n, labels.shape[0]) * np.asarray(counts) / labels.shape[0]
    assert np.all(np.abs(got - expected) < 1.0)
    assert np.array_equal(chosen, data.stratified_indices(labels, n, seed))


def test_dataset_validation() -> None:
    ds = tiny_dataset()
    with pytest.raises(ValueError):
        Dataset("x", ["a"], ds.train_x, ds.train_y, ds.val_x, ds.val_y)  # labels out of range
    with pytest.raises(ValueError):
        Dataset("x", ds.classes, ds.train_x.float(), ds.train_y, ds.val_x, ds.val_y)
    assert "tiny" in repr(ds) and "40 train" in ds.summary()


# --------------------------------------------------------------------------- #
# sources
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("source", ["mnist", "idx", "idx:", "folder:  ", "imagenet:/x", "", "Sample"])
def test_unknown_or_incomplete_source(source: str) -> None:
    message = raises_one_line(lambda: load_dataset(source), kind=DataUsageError)
    if ":" not in source or source.startswith("imagenet"):
        assert "sample, fashion-mnist, idx:DIR, folder:DIR, cifar:DIR" in message


def test_bad_val_fraction(tmp_path: Path) -> None:
    raises_one_line(lambda: load_dataset("sample", val_fraction=1.5), "val_fraction", kind=DataUsageError)
    root = write_idx_dir(tmp_path / "d", test=False)
    raises_one_line(lambda: data.load_idx(root, val_fraction=0.0), "val_fraction", kind=DataUsageError)


def test_data_error_is_one_line() -> None:
    assert str(DataError("a\nb  c")) == "a b c"
    assert str(DataUsageError("a\nb  c")) == "a b c"


def test_data_error_kinds() -> None:
    assert DataUsageError("x").kind == "usage" and DataRuntimeError("x").kind == "runtime"
    assert issubclass(DataUsageError, DataError) and issubclass(DataRuntimeError, DataError)
    assert not issubclass(DataUsageError, DataRuntimeError)
    assert not issubclass(DataRuntimeError, DataUsageError)


def test_sample() -> None:
    ds = load_dataset("sample")
    assert ds.name == "sample"
    assert ds.num_classes == 10 and ds.classes == list(data.FASHION_MNIST_CLASSES)
    assert ds.train_x.shape == (3000, 1, 28, 28) and ds.val_x.shape == (1000, 1, 28, 28)
    assert np.bincount(ds.train_y.numpy()).tolist() == [300] * 10
    assert np.bincount(ds.val_y.numpy()).tolist() == [100] * 10
    x, y = next(iter(ds.loader(batch_size=32, resolution=32, channels=3)))
    assert x.shape == (32, 3, 32, 32) and y.shape == (32,)
    total = sum(p.stat().st_size for p in data.SAMPLE_DIR.iterdir() if p.is_file())
    assert total < 3 * 1024 * 1024
    assert (data.SAMPLE_DIR / "LICENSE").read_text(encoding="utf-8").startswith("The MIT License")


@pytest.mark.skipif(not data.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.num_train == 60000 and ds.num_val == 10000
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.normalization(1)[0][0] == pytest.approx(0.2860, abs=1e-3)


def test_fashion_mnist_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    absent = dataclasses.replace(data.SOURCES["fashion-mnist"], directory=tmp_path / "absent")
    monkeypatch.setitem(data.SOURCES, "fashion-mnist", absent)
    raises_one_line(
        lambda: load_dataset("fashion-mnist"),
        "not found", "dataset-fashion-mnist", "apt-get install", "idx:DIR",
    )


def test_sample_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    absent = dataclasses.replace(data.SOURCES["sample"], directory=tmp_path / "absent")
    monkeypatch.setitem(data.SOURCES, "sample", absent)
    raises_one_line(lambda: load_dataset("sample"), "sample")
