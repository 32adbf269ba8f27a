"""Make nas/_sample/: the small Fashion-MNIST subset embedded in the package.

Reads the Debian-installed Fashion-MNIST IDX files (package dataset-fashion-mnist,
/usr/share/datasets/fashion-mnist), draws a seeded stratified subset of the train
and test splits (equal counts per class), and writes them as gzipped IDX files
(gzip mtime 0, so reruns are byte-identical) with classes.txt, LICENSE and README.md.

    python scripts/make_sample.py [--source DIR] [--out nas/_sample]
                                  [--train 3000] [--test 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nas.data import (  # noqa: E402
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    DataError,
    load_idx,
    stratified_indices,
    write_idx,
)

LICENSE = """\
The MIT License (MIT)

Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

README = """\
# Embedded Fashion-MNIST sample

A small, class-balanced subset of Fashion-MNIST (Zalando Research,
https://github.com/zalandoresearch/fashion-mnist), used by `--data sample` so the
toolkit runs anywhere without downloading anything.

- train: {n_train} images ({per_train} per class) drawn from the 60,000 official train images
- test (the `val` split): {n_test} images ({per_test} per class) drawn from the 10,000 official test images
- 28x28 grey, uint8; labels 0-9, names in `classes.txt`
- format: gzipped IDX files, the same layout as the original distribution

Made by `python scripts/make_sample.py --train {n_train} --test {n_test} --seed {seed}` from the files
of Debian's package `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`); the draw is
seeded and stratified and the gzip streams carry no timestamp, so reruns give identical files.

Fashion-MNIST is released under the MIT licence, Copyright (c) 2017 Zalando SE; see `LICENSE`.

SHA-256 of the data files:

{hashes}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--out", type=Path, default=REPO / "nas" / "_sample")
    parser.add_argument("--train", type=int, default=3000, help="train images (multiple of 10)")
    parser.add_argument("--test", type=int, default=1000, help="test images (multiple of 10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classes = len(FASHION_MNIST_CLASSES)
    if args.train % classes or args.test % classes or args.train <= 0 or args.test <= 0:
        parser.error(f"--train and --test must be positive multiples of {classes}")

    try:
        full = load_idx(args.source, name=f"idx:{args.source}", classes=FASHION_MNIST_CLASSES)
    except DataError as exc:
        print(f"make_sample: {exc}", file=sys.stderr)
        return 1
    if full.num_val != 10000 or full.num_train != 60000:
        print("make_sample: expected the official 60000/10000 Fashion-MNIST files", file=sys.stderr)
        return 1

    train = stratified_indices(full.train_y.numpy(), args.train, args.seed)
    test = stratified_indices(full.val_y.numpy(), args.test, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte.gz": full.train_x[train, 0].numpy(),
        "train-labels-idx1-ubyte.gz": full.train_y[train].numpy().astype("uint8"),
        "t10k-images-idx3-ubyte.gz": full.val_x[test, 0].numpy(),
        "t10k-labels-idx1-ubyte.gz": full.val_y[test].numpy().astype("uint8"),
    }
    hashes = []
    for name, array in files.items():
        write_idx(args.out / name, array)
        digest = hashlib.sha256((args.out / name).read_bytes()).hexdigest()
        hashes.append(f"    {digest}  {name}")
    (args.out / "classes.txt").write_text("\n".join(FASHION_MNIST_CLASSES) + "\n", encoding="utf-8")
    (args.out / "LICENSE").write_text(LICENSE, encoding="utf-8")
    (args.out / "README.md").write_text(
        README.format(
            n_train=args.train,
            n_test=args.test,
            per_train=args.train // classes,
            per_test=args.test // classes,
            seed=args.seed,
            hashes="\n".join(hashes),
        ),
        encoding="utf-8",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
