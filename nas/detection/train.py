"""Train a detector on :mod:`nas.detection.data` canvases and report COCO mAP on the held-out canvases.

AdamW (weight decay 1e-4 on weights, none on BN and biases), linear warm-up over the
first 5 % of steps then cosine decay, the paper's loss (:mod:`nas.detection.loss`).
After every epoch: BN statistics re-estimated on 8 train batches (as ``nas-train``
does, for the same reason: short runs leave running statistics behind), then
mAP@[.5:.95] and mAP@.5 on the val canvases, and, with ``output``, a checkpoint
(``checkpoint.pt``: model, optimizer, epoch, history, RNG state; atomic).  The same
call on the same ``output`` resumes after the last finished epoch; a checkpoint
made with other settings is refused.  Deterministic with a seed on CPU.
"""
from __future__ import annotations

import io
import json
import math
import sys
import time
from pathlib import Path

import torch

from ..atomic import atomic_write_bytes, atomic_write_text
from ..bn import recalibrate_bn
from .build import build_detector
from .evaluate import coco_map
from .loss import assign, detection_loss
from .postprocess import anchor_boxes, detect, flatten_outputs
from .spec import DetectorSpec

__all__ = ["train_detector", "CheckpointMismatch"]


class CheckpointMismatch(ValueError):
    pass


def _inputs(images: torch.Tensor, channels: int, mean: float, std: float) -> torch.Tensor:
    x = (images.float() / 255 - mean) / std
    return x.expand(-1, channels, -1, -1) if channels != 1 else x


def _targets(split, idx, anchors):
    cls, box = zip(*(assign(anchors, split.boxes[i], split.classes[i]) for i in idx.tolist()))
    return torch.stack(cls), torch.stack(box)


def _evaluate(model, spec, data, anchors, batch_size, channels, mean, std) -> dict:
    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, len(data.val), batch_size):
            x = _inputs(data.val.images[s:s + batch_size], channels, mean, std)
            cls, box = model(x)
            preds += detect(spec, cls, box, score_threshold=0.05, anchors=anchors)
    return coco_map(preds, data.val.boxes, data.val.classes, data.size)


def _recalibrate_bn(model, data, order, batch_size, channels, mean, std, batches: int = 8) -> None:
    n = min(batches, len(order) // batch_size)
    recalibrate_bn(model, (_inputs(data.train.images[order[b * batch_size:(b + 1) * batch_size]], channels, mean, std)
                           for b in range(n)))


def train_detector(spec: DetectorSpec, data, *, epochs: int = 1, batch_size: int = 16, lr: float = 2e-3,
                   seed: int = 0, output: str | Path | None = None, progress: bool = True, log=print) -> dict:
    """Train ``spec`` (sized to the data's classes and canvas size) and return the metrics dict."""
    spec = spec.replace(num_classes=data.num_classes, resolution=data.size)
    channels = spec.backbone.in_channels
    settings = {"spec": spec.fingerprint(), "data": data.summary(), "epochs": epochs, "batch_size": batch_size,
                "lr": lr, "seed": seed}
    train_f = data.train.images.float() / 255
    mean, std = float(train_f.mean()), float(train_f.std())
    anchors = anchor_boxes(spec)
    steps_per_epoch = len(data.train) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(data.train)} train canvases do not fill one batch of {batch_size}")
    total = steps_per_epoch * epochs
    warm = max(1, total // 20)

    torch.manual_seed(seed)
    model = build_detector(spec)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    history, start, seconds = [], 0, 0.0
    ckpt = Path(output) / "checkpoint.pt" if output else None
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state["settings"] != settings:
            raise CheckpointMismatch(f"{ckpt} was made with other settings ({json.dumps(state['settings'])}); "
                                     f"use another --output or the same settings")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        history, start, seconds = state["history"], state["epoch"], state["seconds"]
        torch.set_rng_state(state["rng"])
        log(f"resuming after epoch {start} of {epochs} from {ckpt}")

    bar = None
    if progress and start < epochs:
        from ..progress import progress_bar
        bar = progress_bar(total=total, initial=start * steps_per_epoch, unit="step",
                           desc=f"train {spec.name or 'detector'}", dynamic_ncols=True, leave=False)
    g = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(len(data.train), generator=g) for _ in range(epochs)]  # epoch e's order, resumable
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        model.train()
        order = orders[epoch]
        run = {"loss": 0.0, "class": 0.0, "box": 0.0}
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = _inputs(data.train.images[idx], channels, mean, std)
            cls_t, box_t = _targets(data.train, idx, anchors)
            cls, box = model(x)
            cls_flat, box_flat = flatten_outputs(cls, box, spec.num_classes)
            loss, lc, lb = detection_loss(cls_flat, box_flat, cls_t, box_t)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            for k, v in (("loss", loss), ("class", lc), ("box", lb)):
                run[k] += float(v.detach()) / steps_per_epoch
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        _recalibrate_bn(model, data, order, batch_size, channels, mean, std)
        metrics = _evaluate(model, spec, data, anchors, 2 * batch_size, channels, mean, std)
        seconds += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, **{k: round(v, 5) for k, v in run.items()}, **metrics,
                        "seconds": round(seconds, 1)})
        if bar is not None:
            bar.write(f"epoch {epoch + 1}/{epochs}: loss {run['loss']:.4f}, mAP {metrics['map']:.4f}, "
                      f"mAP@.5 {metrics['map50']:.4f}, {seconds:.0f} s", file=sys.stderr)  # stdout may be --json
        if ckpt is not None:
            buf = io.BytesIO()
            torch.save({"settings": settings, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history, "seconds": seconds,
                        "rng": torch.get_rng_state()}, buf)
            atomic_write_bytes(ckpt, buf.getvalue())
    if bar is not None:
        bar.close()
    last = history[-1] if history else {}
    result = {"spec": spec.name, "data": data.summary(), "epochs": epochs, "steps": total, "batch_size": batch_size,
              "lr": lr, "seed": seed, "resolution": spec.resolution, "map": last.get("map"),
              "map50": last.get("map50"), "seconds": round(seconds, 1),
              "images_per_second": round(len(data.train) * epochs / seconds, 2) if seconds else None,
              "history": history}
    if output:
        out = Path(output)
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        atomic_write_bytes(out / "weights.pt", buf.getvalue())
        spec.save(out / "spec.json")
        atomic_write_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result
