"""``nas-supernet train|score|extract``: a weight-sharing supernet over a search space.

::

    nas-supernet train --space mnasnet-b0 --data fashion-mnist --epochs 8 --output runs/sn
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

import argparse
import io
import json
import os
import sys
from pathlib import Path

from . import (ArgumentParser, RuntimeFailure, UsageError, command, load_data, non_negative_int, positive_int,
               tune_allocator)
from ..recipes import RECIPE_NAMES
from ..presets import load_spec
from ..atomic import atomic_write_bytes, atomic_write_text
from ..spec import MAX_RESOLUTION


def _common(ap) -> None:
    ap.add_argument("--threads", type=positive_int("--threads"), default=1,
                    help="torch CPU threads (default 1, as nas-train)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto (CUDA when present)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _parser() -> ArgumentParser:
    ap = ArgumentParser(prog="nas-supernet", description="Train a weight-sharing supernet over a search space; "
                                                         "score or extract any member with inherited weights.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    t = sub.add_parser("train", help="train (or resume) a supernet with the sandwich rule")
    t.add_argument("--space", default="mnasnet-b0", help="search space (default mnasnet-b0)")
    t.add_argument("--data", default="sample", help="sample (default), fashion-mnist, idx:DIR, folder:DIR, cifar:DIR")
    t.add_argument("--epochs", type=positive_int("--epochs"), default=None,
                   help="default 4 (of all the data: ~52 min for Fashion-MNIST at 28 px on one core)")
    t.add_argument("--resolution", type=positive_int("--resolution"), default=32, help="training px (default 32)")
    t.add_argument("--batch-size", type=positive_int("--batch-size"), default=64, help="default 64")
    t.add_argument("--recipe", choices=RECIPE_NAMES, default="adamw", help="default adamw (sgd-based: resnet)")
    t.add_argument("--seed", type=non_negative_int("--seed"), default=0, help="default 0")
    t.add_argument("--limit-train", type=positive_int("--limit-train"), help="use only N training images")
    t.add_argument("--random-members", type=non_negative_int("--random-members"), default=2,
                   help="random members per step besides the largest and smallest (default 2)")
    t.add_argument("--smallest", choices=("dwconv", "mbconv", "rotate", "none"), default=None,
                   help="the sandwich's narrow end: the smallest member of the depthwise-separable branch, of the "
                        "MBConv branch, of each branch in turn, or none (default: the library's, see docs)")
    t.add_argument("--schedule", choices=("sandwich", "progressive"), default=None,
                   help="sandwich: every choice elastic from the start; progressive: Once-for-All's shrinking, "
                        "one choice per phase (default: the library's)")
    t.add_argument("--weight-decay", type=float, default=None, help="default 0 (not the recipe's)")
    t.add_argument("--plain-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="a private last BN per branch for layers that add no shortcut (default: on)")
    t.add_argument("--distill", choices=("end-to-end", "blockwise"), default=None,
                   help="distilled members run on their own features (end-to-end) or stage by stage on the "
                        "largest's (blockwise, DNA)")
    t.add_argument("--feature-distill", type=float, default=None, metavar="W",
                   help="weight of the stage-wise feature distillation from the largest member (default 1; 0: off)")
    t.add_argument("--zero-init-residual", action="store_true",
                   help="start layers that can add an identity as the identity (BigNAS)")
    t.add_argument("--eval-images", type=non_negative_int("--eval-images"), default=1000,
                   help="held-out images for the per-epoch check of the largest and smallest (0: none)")
    t.add_argument("--checkpoint-minutes", type=float, default=10.0,
                   help="also checkpoint this often inside an epoch (default 10)")
    t.add_argument("--max-steps", type=positive_int("--max-steps"),
                   help="stop after this many steps in all (checkpointed; rerun to go on)")
    t.add_argument("--output", required=True, help="the supernet folder (supernet.pt, train.json)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(t)
    for name, helptext in (("score", "held-out accuracy of a member with inherited weights"),
                           ("extract", "a member's inherited weights as a state dict for nas.build_model")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("spec", help="a preset name, a JSON file or a JSON string (a member of the space)")
        s.add_argument("--supernet", required=True, metavar="DIR", help="a folder written by nas-supernet train")
        s.add_argument("--data", help="data for BN recalibration (and scoring); default: the supernet's")
        s.add_argument("--calibration-images", type=positive_int("--calibration-images"), default=None,
                       help="training images for BN recalibration (default 2000)")
        s.add_argument("--resolution", type=positive_int("--resolution"),
                       help="default: the supernet's training resolution")
        _common(s)
        if name == "score":
            s.add_argument("--limit-val", type=positive_int("--limit-val"), help="score on N held-out images")
        else:
            s.add_argument("--output", "-o", required=True, metavar="W.pt", help="the state dict to write")
            s.add_argument("--spec-output", metavar="S.json", help="also write the member spec the weights fit")
            s.add_argument("--no-recalibrate", action="store_true",
                           help="keep the supernet's running BN statistics (exactly the supernet's outputs)")
    return ap


def _check_file_output(path: str, flag: str) -> Path:
    p = Path(path)
    if p.is_dir() or path.endswith(os.sep):
        raise UsageError(f"{flag} {path} is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {flag} {path}: no such directory {parent}")
    return p


@command("nas-supernet")
def main(argv=None) -> int:
    args = _parser().parse_args(argv)
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
    if args.batch_size < 2:
        raise UsageError("--batch-size must be at least 2 (BatchNorm needs two samples)")
    if not args.checkpoint_minutes > 0:
        raise UsageError(f"--checkpoint-minutes must be > 0, got {args.checkpoint_minutes}")
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

    if (out / "supernet.pt").exists():
        try:
            read_checkpoint(out)
        except SupernetError as e:
            raise RuntimeFailure(str(e)) from None
    if args.weight_decay is not None and not args.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.feature_distill is not None and not args.feature_distill >= 0:
        raise UsageError(f"--feature-distill must be >= 0, got {args.feature_distill}")
    options = {k: getattr(args, k) for k in ("epochs", "smallest", "weight_decay", "schedule", "plain_bn",
                                             "feature_distill", "distill") if getattr(args, k) is not None}
    if args.zero_init_residual:
        options["zero_init_residual"] = True
    cfg = TrainConfig(space=args.space, data=args.data, resolution=args.resolution,
                      batch_size=args.batch_size, recipe=args.recipe, seed=args.seed, limit_train=args.limit_train,
                      random_members=args.random_members, eval_images=args.eval_images, **options)
    try:
        s = train_supernet(cfg, data, out, device=str(device), progress=not args.quiet,
                           checkpoint_seconds=args.checkpoint_minutes * 60, max_steps=args.max_steps)
    except SupernetError as e:
        if "other settings" in str(e):
            raise UsageError(str(e)) from None
        raise RuntimeFailure(str(e)) from None
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one process reports
        return 0
    if args.json:
        sys.stdout.write(json.dumps(s) + "\n")
    else:
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
        member = est.net.member(spec)
    except SupernetError as e:
        raise UsageError(str(e)) from None
    return est, member


def _score(args) -> int:
    est, member = _load(args)
    e = est(member.spec)
    if e.failed:
        raise RuntimeFailure(f"scoring failed: {e.reason}")
    from ..cost import cost

    c = cost(member.spec)
    report = {"spec": member.spec.name, "fingerprint": member.fingerprint(), "accuracy": e.score,
              "loss": e.details.get("loss"), "seconds": e.seconds, "cached": e.details.get("cached"),
              "flops": c.flops, "params": c.params, **{k: v for k, v in est.describe().items() if k != "name"},
              "supernet": str(args.supernet)}
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(f"{member.spec.name or 'spec'} ({c.flops / 1e6:.1f}M FLOPs at {member.spec.resolution} px): "
                         f"held-out accuracy {e.score:.4f} with inherited weights (BN recalibrated on "
                         f"{est.calibration_images} images, {est.resolution} px), {e.seconds:.2f} s"
                         f"{' (cached)' if e.details.get('cached') else ''}\n")
    return 0


def _extract(args) -> int:
    out = _check_file_output(args.output, "--output")
    spec_out = _check_file_output(args.spec_output, "--spec-output") if args.spec_output else None
    est, member = _load(args)
    import torch

    if args.no_recalibrate:
        state = est.net.extract(member)
    else:
        state = est.state_dict(member.spec)
    buf = io.BytesIO()
    torch.save(state, buf)
    spec = member.spec.replace(provenance={**member.spec.provenance,
                                           "weights": {"supernet": str(args.supernet), "step": est.meta["step"],
                                                       "recalibrated": not args.no_recalibrate}})
    atomic_write_bytes(out, buf.getvalue())
    if spec_out is not None:
        atomic_write_text(spec_out, spec.to_json())
    report = {"output": str(out), "spec_output": str(spec_out) if spec_out else None, "tensors": len(state),
              "params": sum(int(v.numel()) for k, v in state.items() if not k.endswith("num_batches_tracked")
                            and "running_" not in k),
              "num_classes": spec.num_classes, "in_channels": spec.in_channels, "fingerprint": spec.fingerprint(),
              "recalibrated": not args.no_recalibrate}
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(f"wrote {out}: {report['tensors']} tensors, {report['params']:,} parameters for "
                         f"{spec.num_classes} classes and {spec.in_channels} input channels"
                         f"{' (BN recalibrated)' if report['recalibrated'] else ''}"
                         + (f"; spec {spec_out}" if spec_out else "") + "\n")
    return 0


entry = main.entry
