"""``nas-supernet``'s arguments: the parser and the checks on argv that need no data or checkpoint."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import ArgumentParser, UsageError, non_negative_int, positive_int
from ..recipes import RECIPE_NAMES

__all__ = ["parser", "check_file_output", "train_options"]


def _common(ap) -> None:
    ap.add_argument("--threads", type=positive_int("--threads"), default=1,
                    help="torch CPU threads (default 1, as nas-train)")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto (CUDA when present)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def parser() -> ArgumentParser:
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


def check_file_output(path: str, flag: str) -> Path:
    p = Path(path)
    if p.is_dir() or path.endswith(os.sep):
        raise UsageError(f"{flag} {path} is a directory; give a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"cannot write {flag} {path}: no such directory {parent}")
    return p




def train_options(args) -> dict:
    """The TrainConfig settings given on the command line (the library's defaults for the rest)."""
    if args.batch_size < 2:
        raise UsageError("--batch-size must be at least 2 (BatchNorm needs two samples)")
    if not args.checkpoint_minutes > 0:
        raise UsageError(f"--checkpoint-minutes must be > 0, got {args.checkpoint_minutes}")
    for flag in ("weight_decay", "feature_distill"):
        value = getattr(args, flag)
        if value is not None and not value >= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
    options = {k: getattr(args, k) for k in ("epochs", "smallest", "weight_decay", "schedule", "plain_bn",
                                             "feature_distill", "distill") if getattr(args, k) is not None}
    if args.zero_init_residual:
        options["zero_init_residual"] = True
    return dict(space=args.space, data=args.data, resolution=args.resolution, batch_size=args.batch_size,
                recipe=args.recipe, seed=args.seed, limit_train=args.limit_train,
                random_members=args.random_members, eval_images=args.eval_images, **options)
