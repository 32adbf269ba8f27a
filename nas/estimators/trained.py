"""The training estimator ``train``: :func:`nas.train.train_and_evaluate` on MnasNet's proxy task."""
from __future__ import annotations

import time
from typing import Callable

from ..spec import Spec
from .types import Estimate, failure_reason

__all__ = ["TrainEstimator", "TRAIN_RESOLUTION", "TRAIN_RECIPE"]

TRAIN_RESOLUTION = 16  # px; B0 at 16 px trains one epoch of the embedded sample in ~22-28 s on one core
# AdamW (nas.train.RECIPES["adamw"]): in one 46-step epoch it trains B0 to 0.64 held-out accuracy
# where the EfficientNet recipe, tuned for 350 ImageNet epochs, reaches 0.25, and it ranks bigger
# nets less unfairly (the sweep is in nas/train.py).
TRAIN_RECIPE = "adamw"


class TrainEstimator:
    kind = "train"
    name = "train"

    def __init__(self, dataset, *, resolution: int | None = None, epochs: float = 1, seed: int = 0,
                 batch_size: int = 64, limit_train: int | None = None, limit_val: int | None = None,
                 recipe: str = TRAIN_RECIPE, device: str = "cpu"):
        self.dataset, self.epochs, self.seed, self.recipe = dataset, epochs, seed, recipe
        self.device = device  # a name for nas.devices.resolve_device: a config stays plain JSON
        self.resolution = int(resolution or TRAIN_RESOLUTION)
        self.batch_size, self.limit_train, self.limit_val = batch_size, limit_train, limit_val

    def __call__(self, spec: Spec, report: Callable | None = None) -> Estimate:
        from ..devices import resolve_device
        from ..train import train_and_evaluate

        on_epoch = (lambda epoch, acc: bool(report(epoch, acc))) if report else None
        t0 = time.perf_counter()
        try:
            r = train_and_evaluate(spec, self.dataset, epochs=self.epochs, resolution=self.resolution,
                                   batch_size=self.batch_size, seed=self.seed, limit_train=self.limit_train,
                                   limit_val=self.limit_val, on_epoch=on_epoch, recipe=self.recipe,
                                   device=resolve_device(self.device))
        except (RuntimeError, ValueError, MemoryError) as e:
            return Estimate(None, self.kind, True, failure_reason(e),
                            seconds=time.perf_counter() - t0)
        details = {"loss": r.loss, "epochs": r.epochs, "steps": r.steps, "images_per_second": r.images_per_second}
        if r.failed:
            return Estimate(None, self.kind, True, r.reason or "training failed", seconds=r.seconds, details=details)
        return Estimate(r.accuracy, self.kind, pruned=bool(r.pruned), seconds=r.seconds, details=details)

    def describe(self) -> dict:
        return {"name": self.name, "resolution": self.resolution, "epochs": self.epochs, "recipe": self.recipe,
                "device": self.device,
                "seed": self.seed, "batch_size": self.batch_size, "limit_train": self.limit_train, "limit_val": self.limit_val}
