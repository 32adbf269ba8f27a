"""The detector side of ``nas-show``, ``nas-scale`` and ``nas-export`` (those commands dispatch here
when their spec is a detector: a ``nas-detector`` document or an ``efficientdet-*`` preset).

::

    nas-show efficientdet-d0                                   # per-part table; params, FLOPs, anchors
    nas-scale --base efficientdet-d0 --phi 3 --output d3-like.json
    nas-scale --base runs/<run>/best.json --detector --phi 0 --output det.json
    nas-scale --published efficientdet-d3
    nas-export efficientdet-d0 --format onnx --output d0.onnx
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import RuntimeFailure, UsageError, non_negative_int, write_spec

__all__ = ["show", "scale", "export"]


def _table(spec, c) -> str:
    head = f"{'part':<10} {'params':>13} {'FLOPs':>18} {'share':>6}"
    levels = f"P{spec.levels.min}-P{spec.levels.max}"
    lines = [f"{spec.name or '(unnamed detector)'} at {c.resolution}x{c.resolution}: backbone "
             f"{spec.backbone.name or '(unnamed)'}, levels {levels}, BiFPN {spec.bifpn.width} x {spec.bifpn.repeats} "
             f"({spec.bifpn.fusion}), heads {spec.head.repeats} deep, {spec.num_classes} classes, "
             f"{spec.anchors.per_location} anchors per location", head, "-" * len(head)]
    for p in c.parts:
        share = 100.0 * p.flops / c.flops if c.flops else 0.0
        lines.append(f"{p.name:<10} {p.params:>13,} {p.flops:>18,} {share:>5.1f}%")
    lines.append("-" * len(head))
    lines.append(f"{'total':<10} {c.params:>13,} {c.flops:>18,} {100.0:>5.1f}%")
    lines.append(f"params {c.params:,}  FLOPs {c.flops:,} (fvcore convention: 1 multiply-add = 1 flop)  "
                 f"anchors {c.num_anchors:,}")
    return "\n".join(lines)


def show(args) -> int:
    from ..detection import detector_cost, load_detector

    spec = load_detector(args.spec)
    c = detector_cost(spec, args.resolution)
    if args.json:
        out = {"name": spec.name, "kind": "detector", "resolution": c.resolution, "params": c.params,
               "flops": c.flops, "num_anchors": c.num_anchors, "parts": [vars(p) for p in c.parts],
               "backbone_stages": [vars(r) for r in c.backbone_stages], "fingerprint": spec.fingerprint()}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        sys.stdout.write(_table(spec, c) + "\n")
    return 0


def _note(msg: str) -> None:
    print(f"nas-scale: {msg}", file=sys.stderr)


def scale(args, coefficients) -> int:
    """``coefficients()`` gives ((alpha, beta, gamma), notes) for the backbone, as nas-scale's classifier rule."""
    from scaling.compound import ScalingError
    from scaling.detection import PUBLISHED, detector_from_backbone, published_detector, scale_detector

    from ..detection import detector_cost, is_detector, load_detector
    from ..presets import load_spec

    if args.family is not None or args.grid_search:
        raise UsageError("--family and --grid-search are for classifiers; scale a detector with --phi or --published")
    if args.published:
        if args.published not in PUBLISHED:
            raise UsageError(f"--published: unknown detector {args.published!r}; one of {', '.join(PUBLISHED)}")
        if args.base:
            raise UsageError("--published emits the published table; drop --base")
        spec = published_detector(args.published)
        c = detector_cost(spec)
        _note(f"published {spec.name}: backbone {spec.backbone.name}, {spec.resolution} px, BiFPN width "
              f"{spec.bifpn.width} x {spec.bifpn.repeats} ({spec.bifpn.fusion}), heads {spec.head.repeats}; "
              f"{c.params:,} params, {c.flops:,} FLOPs")
        write_spec(spec, args.output, "nas-scale")
        return 0
    if args.phi is None:
        raise UsageError("give --phi (or --published NAME) to scale a detector")
    source = args.base or "efficientdet-d0"
    if is_detector(source):
        if args.detector:
            raise UsageError("--detector wraps a classification base; the --base is already a detector")
        base = load_detector(source)
    else:
        backbone = load_spec(source)
        base = detector_from_backbone(backbone, provenance={"backbone": backbone.name,
                                                            "backbone_fingerprint": backbone.fingerprint()})
    abg, notes = coefficients()
    try:
        spec = scale_detector(base, args.phi, *abg, max_params=args.max_params)
    except ScalingError as e:
        raise UsageError(str(e)) from None
    c = detector_cost(spec)
    write_spec(spec, args.output, "nas-scale")
    if args.phi:
        for n in notes:
            _note(n + " (backbone)")
    _note(f"{spec.name}: {spec.resolution} px, BiFPN {spec.bifpn.width} x {spec.bifpn.repeats}, heads "
          f"{spec.head.repeats}; {c.params:,} params, {c.flops:,} FLOPs")
    return 0


def export(args, out) -> int:
    from ..detection import load_detector

    if args.format != "onnx":
        raise UsageError(f"detectors export as onnx only (raw per-level outputs), not {args.format}")
    if args.class_name is not None:
        raise UsageError("--class-name applies to --format py only")
    spec = load_detector(args.spec)
    res = args.resolution if args.resolution is not None else spec.resolution
    largest = 1 << spec.levels.max
    if res % largest:
        raise UsageError(f"--resolution must be a multiple of the largest stride {largest}, got {res}")
    if args.weights is not None and not Path(args.weights).is_file():
        raise UsageError(f"--weights {args.weights}: no such file")

    from ..detection.export import export_detector_onnx
    from ..export import ExportError, describe_check

    try:
        report = export_detector_onnx(spec, out, weights=args.weights, resolution=res, opset=args.opset)
    except ExportError as e:
        raise RuntimeFailure(str(e)) from None
    except RuntimeError as e:  # a state dict that does not fit
        raise UsageError(f"--weights: {' '.join(str(e).split())[:300]}") from None
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(f"wrote {out} ({report['bytes'] / 1e6:.1f} MB): ONNX opset {report['opset']}, "
                         f"{len(report['outputs'])} raw per-level outputs ({report['num_anchors']:,} anchors), dynamic "
                         f"batch; onnxruntime {report['onnxruntime']} matches PyTorch at batch "
                         f"{' and '.join(map(str, report['batch_sizes']))}, {res}x{res}: {describe_check(report)}\n")
    return 0


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
