"""``nas-train``'s arguments (the classifier side; detectors parse their own in ``nas.cli.detector``)."""
from __future__ import annotations

import argparse

from ..recipes import RECIPE_NAMES
from . import ArgumentParser, UsageError, non_negative_int, positive_int

__all__ = ["parser", "add_training_arguments", "positive_float"]


def positive_float(name):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{name} must be a number, got {text!r}") from None
        if not (v > 0 and v != float("inf")):
            raise UsageError(f"{name} must be a positive number, got {text!r}")
        return v
    return parse


def add_training_arguments(ap, *, default_resolution: int = 32) -> None:
    """The training flags ``nas-train`` shares with ``nas-student`` (budget, resolution, recipe, seed, device, output)."""
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=positive_float("--epochs"), help="training epochs (default 1)")
    budget.add_argument("--steps", type=positive_int("--steps"), help="optimizer steps instead of epochs")
    ap.add_argument("--resolution", type=positive_int("--resolution"), default=default_resolution,
                    help=f"training resolution in pixels (default {default_resolution})")
    ap.add_argument("--batch-size", type=positive_int("--batch-size"), default=64, help="default 64")
    # adamw: the recipe that trains well at the short budgets this command is used with
    # (B0, one epoch of the sample: 0.67 against efficientnet's 0.31; results/evaluation/recipe_sweep.json)
    ap.add_argument("--recipe", choices=RECIPE_NAMES, default="adamw",
                    help="default adamw; efficientnet and resnet are the papers' recipes")
    ap.add_argument("--lr", type=positive_float("--lr"), help="override the recipe's peak learning rate per 256 images")
    ap.add_argument("--seed", type=non_negative_int("--seed"), default=0, help="default 0")
    # Default 1 thread: on the 2-core reference machine B0 at 32 px trains at ~130-160
    # images/s with 1 thread and barely faster with 2 when idle, but with 2 threads
    # it fell to 13 images/s while other jobs shared the cores (spinning OpenMP
    # workers), against 127 with 1.  More threads pay off for large inputs.
    ap.add_argument("--threads", type=positive_int("--threads"), default=1,
                    help="torch CPU threads (default 1; see nas-train --help)")
    ap.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default cpu; auto picks CUDA when present)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def parser() -> ArgumentParser:
    ap = ArgumentParser(prog="nas-train", description="Train a spec briefly and report held-out top-1 accuracy.")
    ap.add_argument("spec", help="a preset name, a JSON file, or a JSON string")
    ap.add_argument("--data", default="sample",
                    help="sample (default, embedded), fashion-mnist, idx:DIR, folder:DIR or cifar:DIR")
    add_training_arguments(ap)
    ap.add_argument("--test-resolution", type=positive_int("--test-resolution"),
                    help="evaluate at another resolution (FixRes effect; default: --resolution)")
    fix = ap.add_argument_group("FixRes (fine-tune at the test resolution after training; nas.fixres)")
    fix.add_argument("--finetune-resolution", type=positive_int("--finetune-resolution"), metavar="T",
                     help="after training, fine-tune the classifier and BatchNorm layers at T px on the training "
                          "images (test-time preprocessing) and evaluate there; the weights written are the "
                          "fine-tuned ones")
    fix.add_argument("--finetune-epochs", type=positive_float("--finetune-epochs"), default=1.0,
                     help="fine-tuning epochs (default 1)")
    fix.add_argument("--finetune-lr", type=positive_float("--finetune-lr"),
                     help="fine-tuning's peak rate per 256 images (default: the recipe's)")
    ap.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                    help="random crop and flip while training (default: on from 16 epochs of budget)")
    ap.add_argument("--limit-train", type=positive_int("--limit-train"), help="use only N training images")
    ap.add_argument("--limit-val", type=positive_int("--limit-val"), help="evaluate on only N held-out images")
    ap.add_argument("--init", metavar="W.pt", help="start from these weights (e.g. nas-supernet extract's) instead "
                                                   "of the reference initialisation")
    ap.add_argument("--output", help="directory for metrics.json, weights.pt and spec.json")
    return ap
