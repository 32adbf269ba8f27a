"""Training recipes as plain data: :data:`RECIPES` (name -> :class:`Recipe`) and the schedules.

Torch-free on purpose: the command line offers the recipe names (``--recipe``)
without loading torch, and :mod:`nas.train`, which runs a recipe, reads the same
table.  Pass a name or a :class:`Recipe` to :func:`nas.train.train_and_evaluate`,
e.g. ``dataclasses.replace(RECIPES["efficientnet"], lr=0.1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

__all__ = ["Recipe", "RECIPES", "RECIPE_NAMES", "SCHEDULES"]


@dataclass(frozen=True)
class Recipe:
    """Training hyperparameters.  ``lr`` is the peak rate per 256 images (scaled linearly with batch size)."""

    name: str
    optimizer: str  # "rmsprop" | "sgd" | "adamw"
    lr: float
    momentum: float = 0.9
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    warmup: float = 0.0  # fraction of the budget spent in linear warm-up
    schedule: str = "cosine"  # a key of SCHEDULES
    rmsprop_alpha: float = 0.9
    rmsprop_eps: float = 1e-3 ** 0.5
    nesterov: bool = False
    step_milestones: tuple[float, ...] = (1 / 3, 2 / 3, 8 / 9)  # fractions of the budget ("step")
    step_gamma: float = 0.1
    exp_gamma: float = 0.97  # per decay period ("exponential")
    # EfficientNet decays 0.97 every 2.4 of 350 epochs; as a fraction of the budget
    # that shape (down to ~1% at the end) carries over to short runs.
    exp_period: float = 2.4 / 350
    grad_clip: float | None = None
    bn_recalibration: int = 16  # training batches used to re-estimate BN statistics before evaluation

    def peak_lr(self, batch_size: int) -> float:
        return self.lr * batch_size / 256

    def lr_factor(self, step: int, total: int) -> float:
        """Multiplier of the peak rate at optimizer step ``step`` (0-based) of ``total``."""
        warm = int(round(self.warmup * total))
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total - warm)
        return SCHEDULES[self.schedule](self, progress)


def _cosine(r: Recipe, progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _exponential(r: Recipe, progress: float) -> float:
    return r.exp_gamma ** math.floor(progress / r.exp_period)


def _step(r: Recipe, progress: float) -> float:
    return r.step_gamma ** sum(progress >= m for m in r.step_milestones)


SCHEDULES: dict[str, Callable[[Recipe, float], float]] = {
    "cosine": _cosine,
    "exponential": _exponential,
    "step": _step,
}

# Peak rates: chosen by the sweeps in results/evaluation/recipe_sweep.md.
RECIPES: dict[str, Recipe] = {
    # EfficientNet's recipe (Tan & Le 2019, Sec. 5.2): RMSProp with decay 0.9 and
    # momentum 0.9, BN momentum 0.99 (from the spec), weight decay 1e-5, label
    # smoothing 0.1, dropout and drop connect from the spec, warm-up.  Its
    # epsilon 1e-3 sits *inside* the square root in TF, so PyTorch's (outside)
    # equivalent is sqrt(1e-3).  The paper's 0.256 per 4096 images (0.016 per
    # 256) decayed 0.97 every 2.4 epochs is tuned for 350 ImageNet epochs; a
    # proxy task of 1-5 epochs needs a higher peak and a decay that spans the
    # budget: cosine to zero after 10% warm-up (timm's schedule for EfficientNet).
    # 0.032 (2x the paper): very short runs like a higher peak, but it diverges as
    # soon as the run is a little longer.
    "efficientnet": Recipe(name="efficientnet", optimizer="rmsprop", lr=0.032, momentum=0.9, weight_decay=1e-5,
                           label_smoothing=0.1, warmup=0.1, schedule="cosine"),
    # ResNet's recipe (He et al. 2016; Goyal et al. 2017 for the linear scaling):
    # SGD momentum 0.9 without Nesterov, 0.1 per 256 images, step decay x0.1 at
    # 1/3, 2/3 and 8/9 of the budget (30/60/80 of 90 epochs), weight decay 1e-4,
    # no label smoothing, a short linear warm-up (Goyal et al.).
    "resnet": Recipe(name="resnet", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
                     label_smoothing=0.0, warmup=0.05, schedule="step"),
    # A short-budget recipe (not from a paper): AdamW, 0.012 per 256 images (3e-3
    # at batch 64), weight decay 0.05, label smoothing 0.1, cosine after 10%
    # warm-up.  Adaptive steps tolerate nets of very different depth and width
    # with one rate.
    "adamw": Recipe(name="adamw", optimizer="adamw", lr=0.012, momentum=0.9, weight_decay=0.05,
                    label_smoothing=0.1, warmup=0.1, schedule="cosine"),
}
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)
