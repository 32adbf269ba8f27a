"""EfficientDet's training loss: anchor assignment, focal loss and Huber box regression.

As the reference (effdet's ``DetectionLoss`` and ``AnchorLabeler``, the TF code):

* an anchor is positive for the box it overlaps most when that IoU >= 0.5,
  negative below 0.4, ignored in between, and every box's best anchor is
  positive whatever its IoU (so that no object is left without an anchor);
* class loss: sigmoid focal loss, alpha 0.25, gamma 1.5, summed over anchors and
  classes (ignored anchors excluded) and divided by the number of positives;
* box loss: Huber (delta 0.1) on ``(ty, tx, th, tw)`` codes of positive anchors,
  divided by 4 x positives, weighted 50.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .postprocess import box_iou

__all__ = ["encode_boxes", "assign", "focal_loss", "detection_loss", "ALPHA", "GAMMA", "DELTA", "BOX_WEIGHT"]

ALPHA, GAMMA, DELTA, BOX_WEIGHT = 0.25, 1.5, 0.1, 50.0
POSITIVE, NEGATIVE = 0.5, 0.4


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2)`` boxes against ``(y1, x1, y2, x2)`` anchors -> ``(ty, tx, th, tw)`` (inverse of decode)."""
    ya = (anchors[:, 0] + anchors[:, 2]) / 2
    xa = (anchors[:, 1] + anchors[:, 3]) / 2
    ha = anchors[:, 2] - anchors[:, 0]
    wa = anchors[:, 3] - anchors[:, 1]
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    yc = (boxes[:, 1] + boxes[:, 3]) / 2
    xc = (boxes[:, 0] + boxes[:, 2]) / 2
    return torch.stack([(yc - ya) / ha, (xc - xa) / wa, torch.log(h / ha), torch.log(w / wa)], dim=1)


def assign(anchors: torch.Tensor, boxes: torch.Tensor, classes: torch.Tensor):
    """Per anchor: class target (-1 background, -2 ignored, else the class) and box codes."""
    n = anchors.shape[0]
    cls = torch.full((n,), -1, dtype=torch.long)
    codes = torch.zeros(n, 4)
    if boxes.numel() == 0:
        return cls, codes
    anchors_xyxy = anchors[:, [1, 0, 3, 2]]
    iou = box_iou(anchors_xyxy, boxes)  # [N, K]
    best, which = iou.max(1)
    cls[(best >= NEGATIVE) & (best < POSITIVE)] = -2
    pos = best >= POSITIVE
    forced = iou.argmax(0)  # each box's best anchor
    which[forced] = torch.arange(boxes.shape[0])
    pos[forced] = True
    cls[pos] = classes[which[pos]]
    codes[pos] = encode_boxes(boxes[which[pos]], anchors[pos])
    return cls, codes


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = ALPHA, gamma: float = GAMMA) -> torch.Tensor:
    """Summed sigmoid focal loss; ``targets`` is one-hot of the same shape."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (a_t * (1 - p_t) ** gamma * ce).sum()


def detection_loss(cls_flat: torch.Tensor, box_flat: torch.Tensor, cls_targets: torch.Tensor,
                   box_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Total, class and box loss for ``[B, N, C]`` logits and ``[B, N, 4]`` codes against :func:`assign`'s targets."""
    num_classes = cls_flat.shape[-1]
    pos = cls_targets >= 0
    n_pos = pos.sum().clamp(min=1).float()
    valid = cls_targets != -2
    onehot = F.one_hot(cls_targets.clamp(min=0), num_classes).float() * pos[..., None]
    class_loss = focal_loss(cls_flat[valid], onehot[valid]) / n_pos
    box_loss = F.huber_loss(box_flat[pos], box_targets[pos], delta=DELTA, reduction="sum") / (4 * n_pos)
    return class_loss + BOX_WEIGHT * box_loss, class_loss, box_loss
