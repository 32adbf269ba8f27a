"""Training the supernet: the sandwich rule with in-place distillation (BigNAS, Yu et al. 2020).

Every step runs the largest member on the labels (label smoothing and dropout: the
regularisation goes to the largest only), then the smallest and ``random_members``
uniformly drawn members on the largest's soft predictions, accumulating all
gradients into one optimizer step.  Why this rather than Once-for-All's
progressive shrinking: it is one phase with one schedule, so a single budget in
epochs (and one resume rule) covers it; progressive shrinking needs four phases
with their own budgets, more than a 2-core machine can spend.

Resumable: the checkpoint (``DIR/supernet.pt``, atomic) is written after every
epoch, every ``checkpoint_seconds`` and on Ctrl-C; it holds the optimizer and the
torch generator, the data order is a function of (seed, epoch) and the random
members of (seed, step), so a run killed with ``kill -9`` and restarted repeats
the uninterrupted run from its last checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from search_spaces import get_space

from ..atomic import atomic_write_text
from ..train import MEMORY_FORMAT, RECIPES, Recipe
from ._checkpoint import CHECKPOINT, read_checkpoint, save_checkpoint
from ._distributed import World, average_gradients, broadcast_parameters, join, leave
from ._net import Supernet, SupernetError
from ._score import calibration_batches, inherit, _to

__all__ = ["SEARCH_SUPERNET", "TrainConfig", "train_supernet", "OPTIMIZERS", "peak_rss_mb", "resolve_device"]


# ``nas-search --estimator supernet`` (no folder): the supernet it trains into OUTPUT/supernet first.
# At 28 px on at most 10,000 images, 4 epochs: ~3 min on the embedded sample (3,000 images), ~10 min
# on 10,000 Fashion-MNIST images with two threads (results/supernet/; the 8-epoch supernet there is
# the one to train once with nas-supernet and reuse: --estimator supernet:DIR).
SEARCH_SUPERNET = {"epochs": 4, "resolution": 28, "limit_train": 10000}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights (a resume must repeat it exactly)."""

    space: str = "mnasnet-b0"
    data: str = "sample"
    epochs: int = 4  # of all 60,000 Fashion-MNIST images at 28 px: ~52 min on one idle core (results/supernet/)
    resolution: int = 32
    batch_size: int = 64
    recipe: str = "adamw"
    seed: int = 0
    limit_train: int | None = None
    random_members: int = 2  # BigNAS's sandwich: largest + smallest + 2 random
    # The sandwich's narrow end: "dwconv" (the depthwise-separable branch's smallest), "mbconv" (the
    # MBConv branch's, expand 3: the largest's own weights), "rotate" (each op branch's smallest in
    # turn, one per step) or "none" (the largest and random members only).
    smallest: str = "dwconv"
    # None: the recipe's.  0 by default: decay shrinks every stored tensor at every step while a member
    # uses only its part (results/supernet/ablation.md: rho 0.23 -> 0.45 alone)
    weight_decay: float | None = 0.0
    zero_init_residual: bool = False  # BigNAS: layers that can add an identity start as the identity
    # "sandwich": every choice elastic from the first step; "progressive": Once-for-All's progressive
    # shrinking, one choice made elastic per phase (PROGRESSIVE_ORDER), the largest alone first.
    schedule: str = "sandwich"
    plain_bn: bool = True  # each branch's last BN has a private twin for layers that add no shortcut
    # Weight of the stage-wise feature distillation: every distilled member's stage outputs are pulled
    # towards the largest's (its first channels), so that any stage hands its successor features that
    # the successor was trained on, whichever op, width, kernel, depth or skip produced them.
    feature_distill: float = 1.0
    # "end-to-end": a distilled member runs on its own features; "blockwise": each of its stages runs on
    # the largest's input to that stage and learns the largest's output there (DNA), so every op branch,
    # width and skip learns features aligned with the largest's (ablation: branches' outputs on the same
    # input are otherwise uncorrelated, results/supernet/diagnosis.json)
    distill: str = "end-to-end"
    eval_images: int = 1000  # held-out images for the per-epoch check of the largest and smallest
    calibration_images: int = 500  # for that check only; scoring has its own setting

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _adamw(groups, r: Recipe, lr: float):
    return torch.optim.AdamW(groups, lr=lr, betas=(r.momentum, 0.999))


def _sgd(groups, r: Recipe, lr: float):
    return torch.optim.SGD(groups, lr=lr, momentum=r.momentum, nesterov=r.nesterov)


# RMSProp is left out: nas.train starts its mean square at 1 (TF's convention) through
# private set-up, and the recipe that needs it is tuned for 350 ImageNet epochs anyway.
OPTIMIZERS = {"adamw": _adamw, "sgd": _sgd}


SMALLEST = ("dwconv", "mbconv", "rotate", "none")
SCHEDULES = ("sandwich", "progressive")
# Once-for-All shrinks kernel, then depth, then width; this space adds SE, skip and op, last the op
# (its branches hold separate weights, so it is the choice least like the largest member).
PROGRESSIVE_ORDER = ("kernel", "layers", "filters", "se", "skip", "op")
# What a checkpoint written before these settings existed was trained with (version 1 files).
_BEFORE_SETTINGS = {"smallest": "dwconv", "weight_decay": None, "zero_init_residual": False, "schedule": "sandwich",
                    "plain_bn": False, "feature_distill": 0.0,
                    "distill": "end-to-end"}


def sandwich(net: Supernet, cfg: TrainConfig, step: int, total: int | None = None) -> list:
    """The members of one step: the largest (trained on the labels) first, then the distilled ones.

    The random members are a function of (seed, step), so a resumed run repeats them.  With the
    progressive schedule (``total``: the run's steps) only the choices of the current phase move
    away from the largest member's, and a member equal to one before it is left out.
    """
    rng = random.Random(f"{cfg.seed}:{step}")
    ops = list(net.smallest_of)
    narrow = {"dwconv": [net.smallest], "mbconv": [net.smallest_of.get("mbconv", net.smallest)], "none": [],
              "rotate": [net.smallest_of[ops[step % len(ops)]]]}[cfg.smallest]
    members = [net.largest, *narrow] + [net.sample(rng) for _ in range(cfg.random_members)]
    if cfg.schedule != "progressive":
        return members
    phase = min(len(PROGRESSIVE_ORDER), step * (len(PROGRESSIVE_ORDER) + 1) // max(1, total or 1))
    elastic = PROGRESSIVE_ORDER[:phase]
    top = net.largest.choices
    out, seen = [], set()
    for m in members:
        c = {n: (v if n.split("_", 1)[1] in elastic else top[n]) for n, v in m.choices.items()}
        m = net.member(net.space.decode(c))
        if m.fingerprint() not in seen:
            seen.add(m.fingerprint())
            out.append(m)
    return out


def _optimizer(recipe: Recipe, net: Supernet, lr: float, weight_decay: float | None = None):
    if recipe.optimizer not in OPTIMIZERS:
        raise SupernetError(f"recipe {recipe.name}: optimizer {recipe.optimizer} is not supported for supernet "
                            f"training (use a recipe with {' or '.join(OPTIMIZERS)})")
    # no weight decay on BN parameters and biases, as in nas.train
    params = list(net.parameters())
    decay = recipe.weight_decay if weight_decay is None else weight_decay
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return OPTIMIZERS[recipe.optimizer](groups, recipe, lr)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resolve_device(name: str) -> torch.device:
    """:func:`nas.devices.resolve_device`, its error as a :class:`SupernetError` (one line)."""
    from ..devices import DeviceError
    from ..devices import resolve_device as resolve

    try:
        return resolve(name)
    except DeviceError as e:
        raise SupernetError(f"--device: {e}") from None


class _Diverged(Exception):
    pass


def _soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def feature_distance(student: list, teacher: list) -> torch.Tensor:
    """Mean over stages of the squared error to the teacher's first channels, per stage divided by the
    teacher's variance there (so that every stage weighs alike, whatever its scale)."""
    total = student[0].new_zeros(())
    for s, t in zip(student, teacher):
        t = t[:, :s.shape[1]]
        total = total + F.mse_loss(s, t) / t.var().clamp_min(1e-6)
    return total / max(1, len(student))


def train_supernet(cfg: TrainConfig, dataset, output: str | Path, *, device: str = "cpu", progress: bool = True,
                   checkpoint_seconds: float = 600.0, max_steps: int | None = None) -> dict:
    """Train (or resume, or find complete) the supernet of ``cfg`` in ``output``; returns the summary dict.

    ``max_steps`` stops after that many global steps (a checkpoint is written): for
    benchmarks and tests; a later call resumes.
    """
    if cfg.recipe not in RECIPES:
        raise SupernetError(f"unknown recipe {cfg.recipe!r}; recipes: {', '.join(RECIPES)}")
    if cfg.batch_size < 2:
        raise SupernetError("batch size must be at least 2 (BatchNorm)")
    if cfg.schedule not in SCHEDULES:
        raise SupernetError(f"unknown schedule {cfg.schedule!r}; choose from {', '.join(SCHEDULES)}")
    if cfg.smallest not in SMALLEST:
        raise SupernetError(f"unknown sandwich end {cfg.smallest!r}; choose from {', '.join(SMALLEST)}")
    if cfg.distill not in ("end-to-end", "blockwise"):
        raise SupernetError(f"unknown distillation {cfg.distill!r}; choose end-to-end or blockwise")
    if not cfg.feature_distill >= 0:
        raise SupernetError(f"feature distillation weight must be >= 0, got {cfg.feature_distill}")
    if cfg.weight_decay is not None and not cfg.weight_decay >= 0:
        raise SupernetError(f"weight decay must be >= 0, got {cfg.weight_decay}")
    space = get_space(cfg.space)
    dev = resolve_device(device)
    world = join(dev)
    if world.size > 1:
        if dev.type == "cuda":  # one GPU per process, as torchrun's LOCAL_RANK says
            dev = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(dev)
        if cfg.batch_size % world.size or cfg.batch_size // world.size < 2:
            raise SupernetError(f"the batch of {cfg.batch_size} does not split into {world.size} processes of "
                                f"at least 2 images each (BatchNorm)")
    try:
        return _train(cfg, dataset, Path(output), space, dev, world, progress, checkpoint_seconds, max_steps)
    finally:
        leave(world)


def _train(cfg, dataset, out, space, dev, world, progress, checkpoint_seconds, max_steps):
    path = out / CHECKPOINT
    recipe = RECIPES[cfg.recipe]
    base = space.base
    channels = base.in_channels

    loader = dataset.loader("train", batch_size=cfg.batch_size, resolution=cfg.resolution, channels=channels,
                            shuffle=True, seed=cfg.seed, limit=cfg.limit_train)
    if loader.num_examples < cfg.batch_size:
        raise SupernetError(f"{dataset.name}: {loader.num_examples} training images, fewer than one batch "
                            f"of {cfg.batch_size}")
    loader.drop_last = True
    spe = len(loader)
    total = cfg.epochs * spe

    resumed = None
    if path.exists():
        resumed = read_checkpoint(path)
        had = {**_BEFORE_SETTINGS, **resumed["config"]}
        if had != cfg.to_dict():
            diff = sorted(k for k in set(had) | set(cfg.to_dict()) if had.get(k) != cfg.to_dict().get(k))
            raise SupernetError(f"{out} holds a supernet trained with other settings ({', '.join(diff)}); "
                                f"rerun with the same settings to resume, or choose another --output")
        if resumed["complete"]:
            return _summary(resumed)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = Supernet(space, num_classes=dataset.num_classes, plain_bn=cfg.plain_bn)
        if cfg.zero_init_residual:
            net.zero_init_residual()
        peak = recipe.peak_lr(cfg.batch_size)
        opt = _optimizer(recipe, net, peak, cfg.weight_decay)
        state = {"space": space.name, "skeleton": base.to_dict(), "num_classes": dataset.num_classes,
                 "classes": list(dataset.classes), "in_channels": channels, "config": cfg.to_dict(),
                 "data_name": dataset.name, "step": 0, "total_steps": total, "steps_per_epoch": spe,
                 "complete": False, "history": [], "train_seconds": 0.0, "train_cpu_seconds": 0.0,
                 "peak_rss_mb": 0.0, "world_size": world.size, "global_batch": cfg.batch_size}
        if resumed is not None:
            net.load_state_dict(resumed["model"], strict=True)
            opt.load_state_dict(resumed["optimizer"])
            torch.set_rng_state(resumed["torch_rng"])
            state.update({k: resumed[k] for k in ("step", "history", "train_seconds")})
            state["train_cpu_seconds"] = resumed.get("train_cpu_seconds", 0.0)
        broadcast_parameters(net, world)
        # channels-last, as nas.train: the largest member's step measured 1.6-2.6x faster here (under load)
        net.to(dev, memory_format=MEMORY_FORMAT)
        for group in opt.state.values():  # the optimizer state follows its parameters to the device
            for k, v in group.items():
                if torch.is_tensor(v) and v.device != dev and v.ndim > 0:
                    group[k] = v.to(dev)
        if world.main:
            out.mkdir(parents=True, exist_ok=True)
        return _loop(cfg, dataset, net, opt, recipe, loader, state, out, dev, progress and world.main,
                     checkpoint_seconds, max_steps, world)


def _loop(cfg, dataset, net, opt, recipe, loader, state, out, dev, progress, checkpoint_seconds, max_steps,
          world: World = World()):
    spe, total = state["steps_per_epoch"], state["total_steps"]
    step = state["step"]
    peak = recipe.peak_lr(cfg.batch_size)
    dropout = net.space.base.dropout
    blockwise = cfg.distill == "blockwise"
    calib = val = None
    share = cfg.batch_size // world.size  # this process's part of every global batch
    part = slice(world.rank * share, (world.rank + 1) * share)
    params = list(net.parameters())
    if cfg.eval_images > 0 and world.main:
        calib = calibration_batches(dataset, resolution=cfg.resolution, channels=net.space.base.in_channels,
                                    images=cfg.calibration_images, batch_size=cfg.batch_size)
        val = list(dataset.loader("val", batch_size=256, resolution=cfg.resolution,
                                  channels=net.space.base.in_channels, shuffle=False, seed=cfg.seed,
                                  limit=cfg.eval_images))

    def checkpoint(complete: bool = False) -> None:
        state.update(step=step, complete=complete, peak_rss_mb=max(state["peak_rss_mb"], peak_rss_mb()))
        if not world.main:  # one writer
            return
        payload = {**state, "model": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                   "torch_rng": torch.get_rng_state()}
        if not complete:  # a finished supernet needs no optimizer: a third of the size
            payload["optimizer"] = _cpu(opt.state_dict())
        save_checkpoint(out / CHECKPOINT, payload)
        atomic_write_text(out / "train.json", json.dumps(_summary(state), indent=2) + "\n")

    bar = None
    if progress:
        from ..progress import progress_bar as tqdm
        bar = tqdm(total=total, initial=step, unit="step", desc=f"supernet {cfg.space}", dynamic_ncols=True)
    last_save = time.monotonic()
    t_run = time.perf_counter()
    images_run = 0
    try:
        while step < total and (max_steps is None or step < max_steps):
            epoch, offset = divmod(step, spe)
            loader.epoch = epoch
            net.train()
            epoch_loss, epoch_n = 0.0, 0
            # CPU time beside wall time: on a shared machine it is what the run would take alone
            t0, c0 = time.perf_counter(), time.process_time()
            for b, (x, y) in enumerate(loader):
                if b < offset:
                    continue  # resuming inside an epoch: the order of (seed, epoch) is replayed
                if max_steps is not None and step >= max_steps:
                    break
                n_global = int(y.shape[0])
                if world.size > 1:
                    x, y = x[part], y[part]
                x, y = x.to(dev).contiguous(memory_format=MEMORY_FORMAT), y.to(dev)
                f = recipe.lr_factor(step, total)
                for g in opt.param_groups:
                    g["lr"] = peak * f
                opt.zero_grad(set_to_none=True)
                chosen = sandwich(net, cfg, step, total)
                taught = [] if cfg.feature_distill > 0 or blockwise else None
                stem = [] if blockwise else None
                logits = net(x, chosen[0], dropout=dropout, features=taught, stem=stem)
                if taught is not None:
                    taught = [t.detach() for t in taught]
                loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
                loss.backward()
                soft = F.softmax(logits.detach(), dim=1)
                value = float(loss.detach())
                for m in chosen[1:]:
                    if blockwise:
                        feats, member_logits = net.forward_blockwise(m, stem[0].detach(), taught)
                        distill = _soft_cross_entropy(member_logits, soft) + \
                            cfg.feature_distill * feature_distance(feats, taught)
                    else:
                        feats = [] if taught is not None else None
                        distill = _soft_cross_entropy(net(x, m, features=feats), soft)
                        if feats is not None:
                            distill = distill + cfg.feature_distill * feature_distance(feats, taught)
                    distill.backward()
                    value += float(distill.detach())
                if not math.isfinite(value):
                    raise _Diverged(f"loss became {value} at step {step + 1}")
                average_gradients(params, world)
                opt.step()
                step += 1
                images_run += n_global
                epoch_loss += value / len(chosen)
                epoch_n += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{value / len(chosen):.3f}", epoch=f"{epoch + 1}/{cfg.epochs}", refresh=False)
                if time.monotonic() - last_save > checkpoint_seconds and step % spe:
                    state["train_seconds"] += time.perf_counter() - t0
                    state["train_cpu_seconds"] += time.process_time() - c0
                    t0, c0 = time.perf_counter(), time.process_time()
                    checkpoint()
                    last_save = time.monotonic()
            state["train_seconds"] += time.perf_counter() - t0
            state["train_cpu_seconds"] += time.process_time() - c0
            if step % spe == 0 and step > 0 and world.main:
                entry = {"epoch": step // spe, "step": step, "train_loss": epoch_loss / max(1, epoch_n),
                         "seconds": state["train_seconds"]}
                if val is not None:
                    for label, m in (("largest", net.largest), ("smallest", net.smallest)):
                        model = inherit(net, m, calib, dev)
                        entry[f"{label}_accuracy"], _ = _evaluate(model, val, dev)
                    net.train()
                state["history"].append(entry)
                if bar is not None and val is not None:
                    bar.set_postfix(largest=f"{entry['largest_accuracy']:.3f}",
                                    smallest=f"{entry['smallest_accuracy']:.3f}", epoch=entry["epoch"])
            checkpoint(complete=step >= total)
            last_save = time.monotonic()
    except _Diverged as e:
        raise SupernetError(f"training diverged: {e}") from None
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        if bar is not None:
            bar.close()
    summary = _summary(state)
    elapsed = time.perf_counter() - t_run
    summary["images_per_second_this_run"] = images_run / elapsed if elapsed > 0 else 0.0
    return summary


def _evaluate(model, batches, dev):
    from ..train import evaluate

    return evaluate(model, _to(batches, dev))


def _cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


def _summary(state: dict) -> dict:
    keys = ("space", "data_name", "num_classes", "config", "step", "total_steps", "steps_per_epoch", "complete",
            "history", "train_seconds", "train_cpu_seconds", "peak_rss_mb")
    s = {k: state.get(k) for k in keys}
    s["world_size"], s["global_batch"] = state.get("world_size", 1), state.get("global_batch")
    cfg = state["config"]
    s["members_per_step"] = 1 + {"none": 0}.get(cfg.get("smallest", "dwconv"), 1) + cfg["random_members"]
    images = state["step"] * cfg["batch_size"]
    s["images_per_second"] = images / state["train_seconds"] if state["train_seconds"] else 0.0
    return s
