"""``nas-supernet train|score|extract``: a weight-sharing supernet over a search space.

::

    nas-supernet train --space mnasnet-b0 --data fashion-mnist --resolution 28 --output runs/sn
    nas-supernet score SPEC --supernet runs/sn [--json]
    nas-supernet extract SPEC --supernet runs/sn --output W.pt

``train`` resumes when rerun with the same settings (after Ctrl-C or ``kill -9``) and
does nothing when the supernet in ``--output`` is complete.  ``score`` prints the
member's held-out accuracy with inherited weights (BN recalibrated); ``extract``
writes its weights as a plain state dict for ``nas.build_model`` (classes: the
supernet's).  Bad input: one line, exit 2; a missing or corrupt checkpoint or
unreadable data: exit 1; nothing is written then.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import RuntimeFailure, UsageError, command, load_data, tune_allocator
from .supernet_args import check_file_output, parser, train_options
from ..presets import load_spec
from ..spec import MAX_RESOLUTION


@command("nas-supernet")
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.resolution is not None and args.resolution > MAX_RESOLUTION:
        raise UsageError(f"--resolution must be at most {MAX_RESOLUTION}, got {args.resolution}")
    return {"train": _train, "score": _score, "extract": _extract}[args.command](args)


def _setup(args):
    import torch

    from ..supernet import SupernetError, resolve_device

    torch.set_num_threads(args.threads)
    tune_allocator()
    try:
        return resolve_device(args.device)
    except SupernetError as e:
        raise UsageError(str(e)) from None


def _train(args) -> int:
    from search_spaces import SPACES

    if args.space not in SPACES:
        raise UsageError(f"unknown --space {args.space!r}; spaces: {', '.join(SPACES)}")
    options = train_options(args)
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out} exists and is not a directory")
    from ..train import min_resolution, total_stride
    base = SPACES[args.space].base
    if args.resolution < min_resolution(base):
        raise UsageError(f"--resolution {args.resolution} is too small for the space's strides (total stride "
                         f"{total_stride(base)}); use at least {min_resolution(base)}")
    data = load_data(args.data, seed=args.seed)
    device = _setup(args)
    from ..supernet import SupernetError, TrainConfig, read_checkpoint, train_supernet

    try:
        if (out / "supernet.pt").exists():
            read_checkpoint(out)
        s = train_supernet(TrainConfig(**options), data, out, device=str(device), progress=not args.quiet,
                           checkpoint_seconds=args.checkpoint_minutes * 60, max_steps=args.max_steps)
    except SupernetError as e:
        raise (UsageError if "other settings" in str(e) else RuntimeFailure)(str(e)) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one process reports
        return 0
    if args.json:
        sys.stdout.write(json.dumps(s) + "\n")
        return 0
    last = s["history"][-1] if s["history"] else {}
    acc = (f"; held-out accuracy (BN recalibrated) largest {last['largest_accuracy']:.3f}, smallest "
           f"{last['smallest_accuracy']:.3f}" if "largest_accuracy" in last else "")
    state = "complete" if s["complete"] else f"stopped at step {s['step']} of {s['total_steps']} (rerun to resume)"
    sys.stdout.write(f"supernet {s['space']} on {s['data_name']}: {state}{acc}\n"
                     f"{s['train_seconds']:.0f} s of training, {s['images_per_second']:.1f} images/s "
                     f"(x{s['members_per_step']} members per image), peak RSS {s['peak_rss_mb']:.0f} MiB; "
                     f"wrote {out}{os.sep}supernet.pt, train.json\n")
    return 0


def _load(args):
    """(estimator, member) for score/extract, with the exit codes of the module docstring."""
    from ..supernet import DEFAULT_CALIBRATION_IMAGES, SupernetError, SupernetEstimator, read_checkpoint

    spec = load_spec(args.spec)
    if not Path(args.supernet).is_dir():
        raise UsageError(f"--supernet {args.supernet}: no such directory")
    try:
        meta = read_checkpoint(args.supernet)
    except SupernetError as e:
        raise RuntimeFailure(str(e)) from None
    data = load_data(args.data or meta["config"]["data"], seed=0)
    device = _setup(args)
    try:
        est = SupernetEstimator(args.supernet, data, resolution=args.resolution, device=str(device),
                                limit_val=getattr(args, "limit_val", None),
                                calibration_images=args.calibration_images or DEFAULT_CALIBRATION_IMAGES)
    except SupernetError as e:
        raise (UsageError if "classes" in str(e) else RuntimeFailure)(str(e)) from None
    try:
        return est, est.net.member(spec)
    except SupernetError as e:
        raise UsageError(str(e)) from None


def _score(args) -> int:
    from ..supernet import SupernetError, score_report

    est, member = _load(args)
    try:
        r = score_report(est, member)
    except SupernetError as e:
        raise RuntimeFailure(str(e)) from None
    r["supernet"] = str(args.supernet)
    sys.stdout.write(json.dumps(r) + "\n" if args.json else
                     f"{member.spec.name or 'spec'} ({r['flops'] / 1e6:.1f}M FLOPs at {member.spec.resolution} px): "
                     f"held-out accuracy {r['accuracy']:.4f} with inherited weights (BN recalibrated on "
                     f"{est.calibration_images} images, {est.resolution} px), {r['seconds']:.2f} s"
                     f"{' (cached)' if r['cached'] else ''}\n")
    return 0


def _extract(args) -> int:
    from ..supernet import save_extracted

    out = check_file_output(args.output, "--output")
    spec_out = check_file_output(args.spec_output, "--spec-output") if args.spec_output else None
    est, member = _load(args)
    r = save_extracted(est, member, out, spec_out, recalibrate=not args.no_recalibrate)
    sys.stdout.write(json.dumps(r) + "\n" if args.json else
                     f"wrote {out}: {r['tensors']} tensors, {r['params']:,} parameters for {r['num_classes']} "
                     f"classes and {r['in_channels']} input channels"
                     f"{' (BN recalibrated)' if r['recalibrated'] else ''}"
                     + (f"; spec {spec_out}" if spec_out else "") + "\n")
    return 0


entry = main.entry
