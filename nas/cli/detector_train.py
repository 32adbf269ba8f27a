"""``nas-train DETECTOR ...``: the detector side of ``nas-train`` (it dispatches here when its spec is a
detector): train on canvases of pasted items and report COCO mAP, resumable with ``--output``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import RuntimeFailure, UsageError, non_negative_int

__all__ = ["train"]


def train(argv) -> int:
    """``nas-train DETECTOR ...``: train on pasted-item canvases, report COCO mAP (see nas.detection.train)."""
    import os

    from . import ArgumentParser, load_data, positive_int
    from ..detection import load_detector

    ap = ArgumentParser(prog="nas-train", description=(
        "Train a detector on canvases of pasted items (Fashion-MNIST or any grey IDX source) and report COCO "
        "mAP@[.5:.95] and mAP@.5 on held-out canvases. Rerun the same command with the same --output to resume."))
    ap.add_argument("spec", help="a detector preset, JSON file or JSON string (trained with the data's classes)")
    ap.add_argument("--data", default="sample", help="items to paste: sample (default), fashion-mnist or idx:DIR")
    ap.add_argument("--epochs", type=positive_int("--epochs"), default=1)
    ap.add_argument("--resolution", type=positive_int("--resolution"),
                    help="canvas size in px (default: the spec's; must divide by the largest stride)")
    ap.add_argument("--train-images", type=positive_int("--train-images"), default=2000, help="train canvases")
    ap.add_argument("--val-images", type=positive_int("--val-images"), default=500, help="held-out canvases")
    ap.add_argument("--max-objects", type=positive_int("--max-objects"), default=3, help="items per canvas, 1..N")
    ap.add_argument("--batch-size", type=positive_int("--batch-size"), default=16)
    ap.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (default 2e-3)")
    ap.add_argument("--seed", type=non_negative_int("--seed"), default=0)
    ap.add_argument("--threads", type=positive_int("--threads"), default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--output", help="folder: checkpoint.pt (resume), metrics.json, weights.pt, spec.json")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if not (args.lr > 0 and args.lr < 1):
        raise UsageError(f"--lr must be in (0, 1), got {args.lr}")
    spec = load_detector(args.spec)
    size = args.resolution or spec.resolution
    if size % (1 << spec.levels.max):
        raise UsageError(f"--resolution must be a multiple of the largest stride {1 << spec.levels.max}, got {size}")
    if size < 32:
        raise UsageError(f"--resolution must be at least 32 px to hold an item, got {size}")
    if args.output and Path(args.output).exists() and not Path(args.output).is_dir():
        raise UsageError(f"--output {args.output} exists and is not a folder")
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        raise RuntimeFailure("detector training reports mAP with pycocotools: pip install pycocotools") from None
    if args.threads > 1:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from ..detection.data import make_detection_data
    from ..detection.train import CheckpointMismatch, train_detector

    torch.set_num_threads(args.threads)
    items = load_data(args.data, seed=args.seed)
    data = make_detection_data(items, size, args.train_images, args.val_images, seed=args.seed,
                               max_objects=args.max_objects)
    if len(data.train) < args.batch_size:
        raise UsageError(f"--train-images {len(data.train)} is less than one batch ({args.batch_size})")

    def log(msg):
        print(f"nas-train: {msg}", file=sys.stderr)

    try:
        result = train_detector(spec, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                seed=args.seed, output=args.output, progress=not args.quiet, log=log)
    except CheckpointMismatch as e:
        raise UsageError(str(e)) from None
    except FloatingPointError as e:
        raise RuntimeFailure(str(e)) from None
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(f"{spec.name} on {result['data']}\n{args.epochs} epoch(s) = {result['steps']} steps at "
                         f"{size} px, seed {args.seed}\nheld-out mAP@[.5:.95] {result['map']:.4f}, mAP@.5 "
                         f"{result['map50']:.4f} (pycocotools)\n{result['seconds']:.1f} s (training and evaluation)\n")
    return 0
