"""``nas-train SPEC [--data SOURCE] [--epochs N | --steps N] ...``: train a spec and report held-out accuracy.

The classifier is sized to the data (MnasNet's proxy-task convention), so a
1000-class preset trains as a 10-class net on Fashion-MNIST.  Progress (a bar
with ETA on a terminal, occasional plain lines otherwise) goes to stderr unless
``--quiet``; with ``--json`` stdout holds exactly one JSON object.  ``--output DIR`` receives ``metrics.json``,
``weights.pt`` (a state dict: ``torch.load(path, weights_only=True)``) and
``spec.json`` (the trained spec), each written atomically.
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text
from ..presets import load_spec
from ..spec import MAX_RESOLUTION, min_resolution, total_stride
from . import RuntimeFailure, UsageError, command, load_data
from .train_args import parser



def _summary(spec, r, data) -> str:
    lines = [f"{spec.name or '(unnamed spec)'} on {data.summary()}",
             f"recipe {r.recipe}{' with random crop and flip' if r.augment else ''}, {r.epochs:g} epoch(s) = "
             f"{r.steps} steps at {r.resolution} px, seed {r.seed}"]
    if r.failed:
        lines.append(f"FAILED: {r.reason}")
    else:
        lines.append(f"held-out accuracy {r.accuracy:.4f} (top-1, at {r.test_resolution} px), loss {r.loss:.4f}")
    lines.append(f"{r.seconds:.1f} s, {r.images_per_second:.0f} training images/s"
                 + (" (stopped early)" if r.pruned else ""))
    return "\n".join(lines)


def _read_init(path, spec, data):
    """(spec adapted to the weights' input channels, state dict for the data's classes); one line if they do not fit."""
    from .. import export as ex

    if not Path(path).is_file():
        raise UsageError(f"--init {path}: no such file")
    try:
        fitted, notes = ex.fit_spec_to_weights(spec, path)
        if fitted.num_classes != data.num_classes:
            raise UsageError(f"--init {path}: the weights have {fitted.num_classes} classes, the data "
                             f"{data.name} {data.num_classes}")
        state = ex.load_weights(fitted, path).state_dict()
    except ex.WeightsError as e:
        raise UsageError(f"--init: {e}") from None
    notes = [n for n in notes if not n.startswith("num_classes")]  # the classifier follows the data anyway
    if notes:
        print(f"nas-train: note: adapted the spec to the --init weights: {', '.join(notes)}", file=sys.stderr)
    return fitted, state


def _fixres_summary(fix) -> str:
    after = "FAILED" if fix.failed else f"{fix.finetune_accuracy:.4f}"
    return (f"FixRes at {fix.test_resolution} px: {fix.no_finetune_accuracy:.4f} before fine-tuning, {after} after "
            f"{fix.epochs:g} epoch(s) of the {fix.layers.replace('+', ' and ')} layers ({fix.seconds:.1f} s)")


@command("nas-train")
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    from ..detection import is_detector

    if argv and not argv[0].startswith("-") and is_detector(argv[0]):  # a detector spec comes first
        from .detector_train import train as train_detector

        return train_detector(argv)
    args = parser().parse_args(argv)
    if args.threads > 1:
        # passive OpenMP workers degrade gracefully when other jobs share the cores;
        # it must be set before the OpenMP runtime loads (torch is imported lazily)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    if args.finetune_resolution is not None and args.test_resolution is not None:
        raise UsageError("give --test-resolution or --finetune-resolution, not both (fine-tuning reports the "
                         "accuracy at its resolution before and after)")
    for name in ("resolution", "test_resolution", "finetune_resolution"):
        v = getattr(args, name)
        if v is not None and v > MAX_RESOLUTION:
            raise UsageError(f"--{name.replace('_', '-')} must be at most {MAX_RESOLUTION}, got {v}")
    if args.batch_size < 2:
        raise UsageError("--batch-size must be at least 2 (BatchNorm needs two samples)")
    spec = load_spec(args.spec)
    out_dir = None
    if args.output:
        out_dir = Path(args.output)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--output {out_dir} exists and is not a directory")

    for name in ("resolution", "test_resolution", "finetune_resolution"):
        v = getattr(args, name)
        if v is not None and v < min_resolution(spec):
            raise UsageError(f"--{name.replace('_', '-')} {v} is too small for this network's strides (total stride "
                             f"{total_stride(spec)}); use at least {min_resolution(spec)}")

    from ..devices import DeviceError, resolve_device
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        raise UsageError(f"--device: {e}") from None

    data = load_data(args.data, seed=args.seed)
    if data.num_train < 2:
        raise RuntimeFailure(f"{args.data}: the train split has {data.num_train} image(s); training needs at least 2")
    if data.num_val == 0:
        raise RuntimeFailure(f"{args.data}: the held-out split is empty")
    try:
        data.normalization(spec.in_channels)
    except ValueError as e:
        raise UsageError(f"{args.data}: {e}") from None

    import torch
    from ..train import train_and_evaluate
    torch.set_num_threads(args.threads)
    init = _read_init(args.init, spec, data) if args.init else None
    if init is not None:
        spec = init[0]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    finetune = args.finetune_resolution is not None
    r = train_and_evaluate(spec, data, epochs=args.epochs or 1, steps=args.steps, resolution=args.resolution,
                           test_resolution=args.test_resolution, batch_size=args.batch_size, recipe=args.recipe,
                           seed=args.seed, limit_train=args.limit_train, limit_val=args.limit_val,
                           progress=not args.quiet, return_model=out_dir is not None or finetune, lr=args.lr,
                           augment=args.augment, device=device, init=init[1] if init is not None else None)
    metrics = r.to_dict()
    metrics.update(device=str(device), spec=spec.name, fingerprint=spec.fingerprint(), data=data.name,
                   batch_size=args.batch_size, classes=list(data.classes))
    model, final_resolution, fix = r.model, args.resolution, None
    if finetune and not r.failed:
        from ..fixres import fixres_finetune
        fix = fixres_finetune(spec, r.model, data, args.finetune_resolution, epochs=args.finetune_epochs,
                              batch_size=args.batch_size, recipe=args.recipe, lr=args.finetune_lr, seed=args.seed,
                              limit_train=args.limit_train, limit_val=args.limit_val, progress=not args.quiet,
                              device=device)
        metrics["fixres"] = fix.to_dict()
        model, final_resolution = fix.model, args.finetune_resolution
    if out_dir is not None:
        if model is not None:
            buf = io.BytesIO()
            torch.save(model.state_dict(), buf)
            atomic_write_bytes(out_dir / "weights.pt", buf.getvalue())
            trained = spec.replace(num_classes=data.num_classes, resolution=final_resolution,
                                   provenance={**spec.provenance, "trained_on": data.name})
            atomic_write_text(out_dir / "spec.json", trained.to_json())
        atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    if args.json:
        sys.stdout.write(json.dumps(metrics) + "\n")
    else:
        sys.stdout.write(_summary(spec, r, data) + "\n")
        if fix is not None:
            sys.stdout.write(_fixres_summary(fix) + "\n")
        if out_dir is not None:
            sys.stdout.write(f"wrote {out_dir}{os.sep}metrics.json" + (", weights.pt, spec.json" if model is not None else "")
                             + "\n")
    if r.failed:
        print(f"nas-train: error: training failed: {r.reason}", file=sys.stderr)
        return 1
    if fix is not None and fix.failed:
        print(f"nas-train: error: fine-tuning failed: {fix.reason}", file=sys.stderr)
        return 1
    return 0


entry = main.entry
