"""FixRes: fine-tune at the test resolution (Touvron et al., "Fixing the train-test resolution discrepancy", 2019).

A network trained at resolution ``R`` and tested at a larger ``T`` sees objects
larger than in training, and its BatchNorm statistics and pooled features shift.
FixRes trains at the lower ``R`` (cheaper) and then fine-tunes briefly at ``T``
with test-time preprocessing, so that apparent object size and statistics match;
FixEfficientNet-B0 reached 79.3 % top-1 this way (``../shared/REFERENCE.md``).

What is fine-tuned here (:data:`FINETUNED_LAYERS`): the final linear classifier
and the weight and bias of every BatchNorm layer, with the BatchNorm running
statistics following the data at ``T`` (FixRes fine-tunes the classifier and the
BatchNorm before pooling for ResNet-50; in an EfficientNet every convolution is
followed by a BatchNorm, so all of them adapt).  Convolutions stay frozen.  The
images are the training images at ``T`` without augmentation (test-time
preprocessing: the same resize as the held-out split).  The optimizer is the
run's recipe with its warm-up and decay over the fine-tuning budget, at
:data:`FINETUNE_LR_FACTOR` times the recipe's peak rate unless told otherwise.

Every accuracy is measured as a training run measures it (:func:`nas.train.evaluate_at`):
BatchNorm statistics re-estimated on training images at the evaluation
resolution, then the whole held-out split.  That re-estimation is already the
cheap half of FixRes, so the "no fine-tuning" figure at ``T`` includes it.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .recipes import RECIPES, Recipe
from .spec import Spec
from .train import TrainResult, evaluate_at, train_and_evaluate

__all__ = ["FINETUNED_LAYERS", "FINETUNE_LR_FACTOR", "FixResResult", "fixres_finetune"]

FINETUNED_LAYERS = "classifier+bn"
"""The parameters FixRes fine-tuning trains (:data:`nas.train.TRAINABLE`)."""

FINETUNE_LR_FACTOR = 1.0
"""Fine-tuning's peak learning rate as a fraction of the recipe's.  Swept on the embedded sample
(``scripts/fixres_study.py lr-sweep``, B0 trained at 20 px, tested at 28): 0.1x the recipe's rate
recovers 0.262 -> 0.319 in one epoch, 1x 0.434, 2.5x 0.509; 1x is kept as the recipe's own rate."""


@dataclass
class FixResResult:
    """The accuracies around one fine-tuning: before it at ``test_resolution``, and after."""

    test_resolution: int
    no_finetune_accuracy: float
    finetune_accuracy: float | None
    epochs: float
    lr: float
    seconds: float
    layers: str = FINETUNED_LAYERS
    failed: bool = False
    reason: str | None = None
    run: TrainResult | None = field(default=None, repr=False)
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"test_resolution": self.test_resolution, "no_finetune_accuracy": self.no_finetune_accuracy,
                "finetune_accuracy": self.finetune_accuracy, "layers": self.layers, "epochs": self.epochs,
                "lr": self.lr, "seconds": self.seconds, "failed": self.failed, "reason": self.reason,
                "history": self.run.history if self.run is not None else []}


def fixres_finetune(spec: Spec, model: nn.Module, dataset, test_resolution: int, *, epochs: float = 1,
                    batch_size: int = 64, recipe: str | Recipe = "adamw", lr: float | None = None, seed: int = 0,
                    limit_train: int | None = None, limit_val: int | None = None, progress: bool = False,
                    device=None, layers: str = FINETUNED_LAYERS) -> FixResResult:
    """Measure ``model`` (trained from ``spec``) at ``test_resolution``, fine-tune it there, measure again.

    ``model`` is not changed; the fine-tuned module is ``result.model`` (on the CPU).
    ``lr`` is the peak rate per 256 images (default: :data:`FINETUNE_LR_FACTOR` x the recipe's).
    ``layers`` (:data:`nas.train.TRAINABLE`) is FixRes's :data:`FINETUNED_LAYERS` unless a study
    asks for ``"all"`` (every parameter: the control that tells frozen convolutions from too little data).
    """
    rec = RECIPES[recipe] if isinstance(recipe, str) else recipe
    peak = float(lr) if lr is not None else rec.lr * FINETUNE_LR_FACTOR
    t0 = time.perf_counter()
    before = copy.deepcopy(model)
    if device is not None:
        before = before.to(device)
    no_ft, _ = evaluate_at(before, dataset, test_resolution, batch_size=batch_size, seed=seed,
                           limit_train=limit_train, limit_val=limit_val, bn_batches=rec.bn_recalibration)
    del before
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    run = train_and_evaluate(spec.replace(num_classes=dataset.num_classes, resolution=test_resolution), dataset,
                             epochs=epochs, resolution=test_resolution, test_resolution=test_resolution,
                             batch_size=batch_size, recipe=rec, lr=peak, seed=seed, limit_train=limit_train,
                             limit_val=limit_val, progress=progress, return_model=True, augment=False,
                             device=device, init=state, trainable=layers)
    return FixResResult(test_resolution=test_resolution, no_finetune_accuracy=no_ft, finetune_accuracy=run.accuracy,
                        epochs=run.epochs, lr=peak, seconds=time.perf_counter() - t0, failed=run.failed,
                        reason=run.reason, run=run, model=run.model, layers=layers)
