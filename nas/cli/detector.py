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

from . import RuntimeFailure, UsageError, write_spec

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
