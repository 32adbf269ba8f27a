"""The training evaluator: ACC(m) on real data for a fixed, small budget.

:func:`train_and_evaluate` trains a spec from scratch for some epochs (or steps)
at a given resolution and reports top-1 accuracy on the held-out split.  It is the
most expensive and most trustworthy accuracy estimate of the toolkit; the
training-free proxies in :mod:`nas.proxies` are measured against it.

Conventions:

* The proxy-task convention of MnasNet: the evaluator trains
  ``spec.replace(num_classes=dataset.num_classes, resolution=resolution)``, so a
  1000-class preset is trained as a 10-class net on Fashion-MNIST; input channels
  adapt in the data loader (grey repeated to ``spec.in_channels``).
* Budget: ``steps`` (optimizer steps) wins over ``epochs`` when given.  An epoch
  is one pass over the train split (``limit_train`` examples at most), in batches
  of ``batch_size`` with the last partial batch dropped (BatchNorm needs >= 2
  samples).  The learning-rate schedule (warm-up, then decay) spans the whole
  budget, so a 1-epoch run ends at a small learning rate, as a proxy task should.
* After every epoch the net is evaluated on the held-out split at
  ``test_resolution`` (default: the training resolution).  Before that, BatchNorm
  running statistics are re-estimated on a few training batches at the evaluation
  resolution (``Recipe.bn_recalibration`` batches; 0 keeps the running averages).
  Why: with the reference BN momentum (0.01 in PyTorch's convention) a run of a
  few hundred steps leaves running statistics far from the data, and evaluation
  would measure that lag instead of the architecture.  At another test resolution
  this is also the cheap form of the FixRes correction (Touvron et al. 2019:
  statistics shift with resolution).
* Failures are results, not exceptions: a NaN/inf loss or running out of memory
  gives ``TrainResult(failed=True, reason=...)``.  Programming errors still raise.
* Deterministic with a seed on CPU: the model initialisation, stochastic depth and
  dropout draw from a torch generator seeded with ``seed`` (the caller's global
  RNG state is restored afterwards), and the loader order is seeded.

Recipes (:data:`RECIPES`, torch-free in :mod:`nas.recipes`) are frozen dataclasses;
pass a name or a :class:`Recipe`, e.g. ``dataclasses.replace(RECIPES["efficientnet"], lr=0.1)``.
The ``lr`` argument of :func:`train_and_evaluate` overrides just the peak
learning rate (per 256 images).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .augment import augment_batch
from .bn import recalibrate_bn
from .build import build_model
from .recipes import RECIPES, SCHEDULES, Recipe
from .spec import Spec, min_resolution, total_stride

__all__ = ["Recipe", "RECIPES", "SCHEDULES", "TrainResult", "train_and_evaluate", "evaluate", "evaluate_at",
           "input_channels", "make_optimizer", "TRAINABLE", "freeze_for",
           "min_resolution", "total_stride", "recalibrate_bn", "AUGMENT_FROM_EPOCHS", "augment_by_default"]

# Random crop + flip (nas.augment) is on by default from this many epochs of budget.
# Measured (results/ground_truth/recipe_sweep.json): at 8 epochs of 10k Fashion-MNIST
# images it *cost* B0 0.088 accuracy (0.784 vs 0.872, adamw 0.012): short runs underfit,
# and centred, frame-filling items lose by translation.  It pays where a run starts to
# memorize its data; 16 is above every budget measured here (untested beyond).
AUGMENT_FROM_EPOCHS = 16


def augment_by_default(epochs: float) -> bool:
    """Whether a run of ``epochs`` epochs augments when the caller does not say."""
    return epochs >= AUGMENT_FROM_EPOCHS


# Channels-last (NHWC) activations and weights: oneDNN's convolutions run without
# layout reorders; B0's training step measured 1.05-1.25x the contiguous format's
# speed on a 2-core CPU (results/evaluation/train_benchmark.md).  Results equal
# the contiguous format's up to float rounding, which a one-epoch run amplifies.
# The model is handed back contiguous.
MEMORY_FORMAT = torch.channels_last

# What a run trains: every parameter, or only the classifier and the BatchNorm layers'
# affine parameters (FixRes's fine-tuning at the test resolution, nas.fixres).
TRAINABLE = ("all", "classifier+bn")


def freeze_for(model: nn.Module, trainable: str) -> nn.Module:
    """Turn off gradients of every parameter ``trainable`` (one of :data:`TRAINABLE`) leaves out; returns ``model``.

    ``"classifier+bn"`` keeps the final linear classifier (``model.classifier``) and the
    weight and bias of every BatchNorm layer; convolutions (and squeeze-excitation's
    1x1 convolutions) are frozen.  BatchNorm running statistics are buffers, not
    parameters: they follow the data whenever the model is in training mode.
    """
    if trainable not in TRAINABLE:
        raise ValueError(f"unknown trainable {trainable!r}; use one of {', '.join(TRAINABLE)}")
    if trainable == "all":
        return model
    keep = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for p in m.parameters()}
    keep |= {id(p) for p in getattr(model, "classifier").parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return model


# ---------------------------------------------------------------- optimizer


def make_optimizer(recipe: Recipe, model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model`` at learning rate ``lr`` (already scaled to the batch)."""
    # No weight decay on BN parameters and biases (1-D tensors): common practice
    # (timm, Goyal et al.); decaying BN scales only fights the normalisation.
    params = [p for p in model.parameters() if p.requires_grad]  # frozen ones (freeze_for) stay out
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(groups, lr=lr, alpha=recipe.rmsprop_alpha, eps=recipe.rmsprop_eps,
                                  momentum=recipe.momentum)
        # TF's RMSProp starts the mean square at 1, PyTorch's at 0.  From 0, the
        # first updates are ~lr / sqrt(1 - alpha) = 3x lr in every coordinate and
        # short runs diverge; from 1 they start as plain momentum SGD (timm's
        # RMSpropTF does the same).
        for p in params:
            opt.state[p] = {"step": torch.zeros(()), "square_avg": torch.ones_like(p),
                            "momentum_buffer": torch.zeros_like(p)}
        return opt
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(recipe.momentum, 0.999))
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} (use rmsprop, sgd or adamw)")


# ---------------------------------------------------------------- result


@dataclass
class TrainResult:
    """What one training evaluation produced.  ``accuracy`` is None when the run failed.

    ``epochs`` counts completed epochs (fractional for a ``steps`` budget);
    ``images_per_second`` is training throughput (evaluation excluded);
    ``history`` has one entry per evaluation: ``epoch`` (completed epochs),
    ``train_loss`` (mean over the epoch), ``val_accuracy``, ``val_loss`` and
    ``seconds`` (wall time since the start of the run, cumulative).
    """

    accuracy: float | None
    loss: float | None
    epochs: float
    steps: int
    seconds: float
    images_per_second: float
    failed: bool = False
    reason: str | None = None
    pruned: bool = False
    history: list[dict] = field(default_factory=list)
    resolution: int | None = None
    test_resolution: int | None = None
    recipe: str | None = None
    seed: int | None = None
    augment: bool | None = None
    num_classes: int | None = None
    model: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        d["history"] = [dict(h) for h in self.history]
        return d


# ---------------------------------------------------------------- helpers


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "memory" in msg and "alloc" in msg
                                            or "not enough memory" in msg)


def evaluate(model: nn.Module, loader) -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` over ``loader``."""
    model.eval()
    device = _device_of(model)
    correct, total, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x.contiguous(memory_format=MEMORY_FORMAT))
            loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += int(y.shape[0])
    if total == 0:
        return float("nan"), float("nan")
    return correct / total, loss_sum / total


def evaluate_at(model: nn.Module, dataset, resolution: int, *, batch_size: int = 64, seed: int = 0,
                limit_train: int | None = None, limit_val: int | None = None,
                bn_batches: int = RECIPES["adamw"].bn_recalibration) -> tuple[float, float]:
    """(accuracy, loss) of ``model`` on the held-out split at ``resolution``, as a training run evaluates.

    BatchNorm statistics are first re-estimated on ``bn_batches`` training batches at that
    resolution (the same draw a run of this ``seed`` and ``limit_train`` calibrates with;
    0 keeps the running averages).  The model's statistics change; its weights do not.
    """
    channels = input_channels(model)
    if bn_batches > 0:
        _recalibrate(model, dataset.loader("train", batch_size=batch_size, resolution=resolution, channels=channels,
                                           shuffle=True, seed=seed + 1, limit=limit_train), bn_batches)
    val = dataset.loader("val", batch_size=max(batch_size, 256), resolution=resolution, channels=channels,
                         shuffle=False, seed=seed, limit=limit_val)
    return evaluate(model, val)


def input_channels(model: nn.Module) -> int:
    """The channels ``model`` takes: those of its first convolution."""
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)


def _recalibrate(model: nn.Module, loader, batches: int) -> None:
    """BatchNorm statistics from ``batches`` batches of ``loader``, moved to the model's device."""
    dev = _device_of(model)
    recalibrate_bn(model, (x.to(dev).contiguous(memory_format=MEMORY_FORMAT) for x, _ in _take(loader, batches)))


class _Diverged(Exception):
    pass


def _resolve_recipe(recipe: str | Recipe, lr: float | None) -> Recipe:
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"unknown recipe {recipe!r}; recipes: {', '.join(RECIPES)}")
        recipe = RECIPES[recipe]
    elif not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a name or a Recipe, got {type(recipe).__name__}")
    if recipe.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {recipe.schedule!r}; schedules: {', '.join(SCHEDULES)}")
    if lr is not None:
        recipe = dataclasses.replace(recipe, lr=float(lr))
    return recipe


# ---------------------------------------------------------------- the evaluator


def train_and_evaluate(spec: Spec, dataset, *, epochs: float = 1, steps: int | None = None,
                       resolution: int | None = None, test_resolution: int | None = None, batch_size: int = 64,
                       recipe: str | Recipe = "efficientnet", seed: int = 0, limit_train: int | None = None,
                       limit_val: int | None = None, progress: bool = False,
                       on_epoch: Callable[[int, float], bool | None] | None = None, return_model: bool = False,
                       lr: float | None = None, augment: bool | None = None,
                       device: torch.device | str | None = None, init: dict | None = None,
                       trainable: str = "all", randaugment: tuple[int, int] | None = None,
                       evaluate_each_epoch: bool = True) -> TrainResult:
    """Train ``spec`` on ``dataset`` (a :class:`nas.data.Dataset`) and evaluate on its held-out split.

    ``epochs`` may be fractional; ``steps`` (if given) sets the budget in optimizer
    steps instead.  ``on_epoch(epoch_index, val_accuracy)`` runs after every epoch
    (index 0-based); returning True stops training (``pruned=True``).  ``lr``
    overrides the recipe's peak learning rate per 256 images.  ``augment`` turns
    random crop and flip (:mod:`nas.augment`) on or off; None (default) turns it on
    for budgets of :data:`AUGMENT_FROM_EPOCHS` epochs or more.  ``init`` (a state dict for
    the spec with the data's classes, loaded strictly) replaces the initialisation: fine-tuning.
    ``trainable`` (:data:`TRAINABLE`) limits the parameters that learn (:func:`freeze_for`).
    ``evaluate_each_epoch=False`` evaluates once, at the end (for budgets of many short epochs,
    e.g. a few hundred steps over a thousand images, where evaluating would cost more than training).
    ``randaugment=(num_ops, magnitude)`` adds RandAugment (:mod:`nas.randaugment`, torchvision's ops)
    to every training batch, after crop and flip.  The train split may hold soft targets
    (:meth:`nas.data.Dataset.with_train`): the loss is then the cross-entropy to those distributions.
    ``progress`` shows progress on stderr (:func:`nas.progress.progress_bar`).  With
    ``return_model`` the trained module is ``r.model`` (on the CPU).  ``device`` (default CPU; :func:`nas.devices.resolve_device`
    names one) runs the model there; on CUDA the forward pass and loss run under bf16 autocast.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    rec = _resolve_recipe(recipe, lr)
    res, test_res = _check_budget(spec, resolution, test_resolution, batch_size, epochs, steps)
    spec = spec.replace(num_classes=dataset.num_classes, resolution=res)
    data = _loaders(spec, dataset, res, test_res, batch_size, seed, limit_train, limit_val, epochs, steps, augment,
                    randaugment)
    result = TrainResult(accuracy=None, loss=None, epochs=0.0, steps=0, seconds=0.0, images_per_second=0.0,
                         resolution=res, test_resolution=test_res, recipe=rec.name, seed=seed,
                         augment=data.augment, num_classes=dataset.num_classes)
    run = _Run(t_start=time.perf_counter())
    # its own stream, so that turning augmentation on never changes the initialisation
    aug_rng = torch.Generator().manual_seed(seed + 2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            run.model = freeze_for(_initial_model(spec, init, dev), trainable)
            peak = rec.peak_lr(batch_size)
            opt = make_optimizer(rec, run.model, peak)
            criterion = nn.CrossEntropyLoss(label_smoothing=rec.label_smoothing)
            if progress:
                from .progress import progress_bar
                run.bar = progress_bar(total=data.total_steps, unit="step", desc=f"train {spec.name or 'spec'}",
                                       dynamic_ncols=True, leave=False)
            epoch = 0
            while run.step < data.total_steps:
                train_loss = _train_epoch(run, data, rec, opt, criterion, peak, aug_rng, dev, epoch)
                if not (evaluate_each_epoch or on_epoch is not None or run.step >= data.total_steps):
                    epoch += 1
                    continue
                acc = _evaluate_epoch(run, data, rec, result, train_loss)
                if run.bar is not None:
                    run.bar.set_postfix(val_acc=f"{acc:.3f}", epoch=epoch + 1)
                stop = on_epoch(epoch, acc) if on_epoch is not None else None
                epoch += 1
                if stop is True and run.step < data.total_steps:
                    result.pruned = True
                    break
        except _Diverged as e:
            result.failed, result.reason = True, str(e)
        except (RuntimeError, MemoryError) as e:
            if not _is_oom(e):
                raise
            result.failed, result.reason = True, f"out of memory: {' '.join(str(e).split())[:200]}"
        finally:
            if run.bar is not None:
                run.bar.close()
    return _finish(result, run, data, return_model)


def _check_budget(spec: Spec, resolution, test_resolution, batch_size: int, epochs: float, steps) -> tuple[int, int]:
    """The training and test resolutions, once the budget and the sizes are checked (ValueError naming the bad one)."""
    res = int(resolution or spec.resolution)
    test_res = int(test_resolution or res)
    if batch_size < 2:
        raise ValueError(f"batch_size must be at least 2 (BatchNorm), got {batch_size}")
    for label, r in (("resolution", res), ("test_resolution", test_res)):
        if r < min_resolution(spec):
            raise ValueError(f"{label} {r} is too small for this network (total stride {total_stride(spec)}); "
                             f"use at least {min_resolution(spec)}")
    if steps is None and not (epochs > 0):
        raise ValueError(f"epochs must be > 0, got {epochs}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return res, test_res


@dataclass
class _Data:
    """What one training run reads: its loaders and its budget in steps."""
    train: Any
    val: Any
    calibration: Any  # a loader of its own, so that calibration never shifts the training order
    steps_per_epoch: int
    total_steps: int
    augment: bool
    randaugment: tuple[int, int] | None = None  # (num_ops, magnitude)
    normalization: tuple[Any, Any] | None = None  # (mean, std) as [1, C, 1, 1], to undo it for RandAugment


def _loaders(spec: Spec, dataset, res: int, test_res: int, batch_size: int, seed: int, limit_train, limit_val,
             epochs: float, steps, augment, randaugment=None) -> _Data:
    channels = spec.in_channels
    train_loader = dataset.loader("train", batch_size=batch_size, resolution=res, channels=channels, shuffle=True,
                                  seed=seed, limit=limit_train)
    n_train = train_loader.num_examples
    if n_train < 2:
        raise ValueError(f"the train split has {n_train} example(s); training needs at least 2")
    if n_train >= batch_size:
        train_loader.drop_last = True
    steps_per_epoch = len(train_loader)
    total_steps = int(steps) if steps is not None else max(1, int(round(epochs * steps_per_epoch)))
    if augment is None:
        augment = augment_by_default(total_steps / steps_per_epoch)
    val_loader = dataset.loader("val", batch_size=max(batch_size, 256), resolution=test_res, channels=channels,
                                shuffle=False, seed=seed, limit=limit_val)
    if val_loader.num_examples == 0:
        raise ValueError("the held-out split is empty")
    calib_loader = dataset.loader("train", batch_size=batch_size, resolution=test_res, channels=channels,
                                  shuffle=True, seed=seed + 1, limit=limit_train)
    norm = None
    if randaugment is not None:
        mean, std = dataset.normalization(channels)
        norm = (torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1))
    return _Data(train_loader, val_loader, calib_loader, steps_per_epoch, total_steps, bool(augment),
                 randaugment, norm)


@dataclass
class _Run:
    """The state of one training run as its steps advance."""
    t_start: float
    model: Any = None
    bar: Any = None
    step: int = 0
    images: int = 0
    train_seconds: float = 0.0


def _initial_model(spec: Spec, init: dict | None, dev: torch.device) -> nn.Module:
    """The spec's model, seeded by the caller's RNG state (its classifier redrawn), or ``init``'s weights."""
    model = build_model(spec)
    _redraw_classifier(model)
    if init is not None:
        model.load_state_dict(init, strict=True)
    return model.to(device=dev, memory_format=MEMORY_FORMAT)


def _train_epoch(run: _Run, data: _Data, rec: Recipe, opt, criterion, peak: float, aug_rng, dev: torch.device,
                 epoch: int) -> float:
    """One pass over the training loader (or what is left of the budget); the mean training loss."""
    model = run.model
    model.train()
    t0 = time.perf_counter()
    train_loss_sum, train_n = 0.0, 0
    for x, y in data.train:
        if run.step >= data.total_steps:
            break
        f = rec.lr_factor(run.step, data.total_steps)
        for g in opt.param_groups:
            g["lr"] = peak * f
        if data.augment:  # on the CPU, before the copy: the generator's stream is device-independent
            x = augment_batch(x, aug_rng)
        if data.randaugment is not None:
            x = _rand_augment(x, data, aug_rng)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = model(x.contiguous(memory_format=MEMORY_FORMAT))
            loss = criterion(out, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise _Diverged(f"loss became {value} at step {run.step + 1}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if rec.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), rec.grad_clip)
        opt.step()
        run.step += 1
        run.images += int(y.shape[0])
        train_loss_sum += value * int(y.shape[0])
        train_n += int(y.shape[0])
        if run.bar is not None:
            run.bar.update(1)
            run.bar.set_postfix(loss=f"{value:.3f}", epoch=epoch + 1, refresh=False)
    run.train_seconds += time.perf_counter() - t0
    return train_loss_sum / max(1, train_n)


def _evaluate_epoch(run: _Run, data: _Data, rec: Recipe, result: TrainResult, train_loss: float) -> float:
    """BN statistics first (see the module docstring), then the held-out split; recorded in ``result``."""
    model = run.model
    done_epochs = run.step / data.steps_per_epoch
    if rec.bn_recalibration > 0:
        _recalibrate(model, data.calibration, rec.bn_recalibration)
    acc, vloss = evaluate(model, data.val)
    if not math.isfinite(vloss):
        raise _Diverged(f"held-out loss became {vloss} after step {run.step}")
    result.history.append({"epoch": round(done_epochs, 6), "train_loss": train_loss,
                           "val_accuracy": acc, "val_loss": vloss,
                           "seconds": time.perf_counter() - run.t_start})
    result.accuracy, result.loss = acc, vloss
    result.epochs, result.steps = done_epochs, run.step
    return acc


def _finish(result: TrainResult, run: _Run, data: _Data, return_model: bool) -> TrainResult:
    """A failed run keeps no scores and no model; timings and throughput; the model on the CPU if asked."""
    model = run.model
    if result.failed:
        result.accuracy, result.loss = None, None
        result.steps, result.epochs = run.step, run.step / data.steps_per_epoch
        model = None
    result.seconds = time.perf_counter() - run.t_start
    result.images_per_second = run.images / run.train_seconds if run.train_seconds > 0 else 0.0
    if return_model:
        result.model = model.to(device="cpu", memory_format=torch.contiguous_format) if model is not None else None
    return result


def _rand_augment(x: torch.Tensor, data: _Data, generator: torch.Generator) -> torch.Tensor:
    """RandAugment on a normalized batch: back to [0, 1] images, augmented, normalized again."""
    from .randaugment import rand_augment

    mean, std = data.normalization
    images = (x * std + mean).clamp_(0.0, 1.0)
    num_ops, magnitude = data.randaugment
    return (rand_augment(images, generator, num_ops=num_ops, magnitude=magnitude) - mean) / std


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _redraw_classifier(model: nn.Module) -> None:
    # build.py already draws the classifier from this distribution (PyTorch's
    # U(+-1/sqrt(in_features)), not the reference's 1/sqrt(num_classes)), so this
    # adds nothing as an initialisation.  It stays because the redraw advances the
    # seeded generator: without it the classifier's weights and every later
    # stochastic-depth and dropout draw change, and with them every seeded result
    # in results/ (measured: the weights differ after the redraw).
    fc = getattr(model, "classifier", None)
    if isinstance(fc, nn.Linear):
        bound = 1.0 / fc.in_features ** 0.5
        nn.init.uniform_(fc.weight, -bound, bound)
        nn.init.zeros_(fc.bias)


def _take(loader, n: int):
    for i, batch in enumerate(loader):
        if i >= n:
            break
        yield batch
