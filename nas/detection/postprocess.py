"""Inference: anchors, box decoding and batched NMS, in plain torch (no torchvision).

Anchors follow effdet's ``Anchors`` (the TF reference): at level ``l`` (stride
``s = 2**l``) centres sit at ``s/2 + k*s``; for each octave scale
``2**(i/num_scales)`` and each aspect ratio ``(x, y)`` a box of half-sides
``anchor_scale * s * octave * x / 2`` and ``... * y / 2``.  They are ordered
(level, y, x, scale, ratio): the order of the head outputs flattened with
``permute(0, 2, 3, 1)``.  Box codes are ``(ty, tx, th, tw)`` against an anchor's
centre and size (the reference's ``decode_box_outputs``); boxes come out as
``(x1, y1, x2, y2)`` pixels.
"""
from __future__ import annotations

import torch

from .spec import DetectorSpec

__all__ = ["anchor_boxes", "flatten_outputs", "decode_boxes", "box_iou", "nms", "batched_nms", "detect"]


def anchor_boxes(spec: DetectorSpec, resolution: int | None = None) -> torch.Tensor:
    """``[N, 4]`` anchors as ``(y1, x1, y2, x2)`` (the reference's layout); N = ``spec.num_anchors()``."""
    res = spec.resolution if resolution is None else resolution
    out = []
    for lvl in range(spec.levels.min, spec.levels.max + 1):
        stride = 2 ** lvl
        n = res // stride
        centres = torch.arange(n, dtype=torch.float64) * stride + stride / 2
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        per = []
        for octave in range(spec.anchors.num_scales):
            for ax, ay in spec.anchors.aspect_ratios:
                base = spec.anchors.anchor_scale * stride * 2 ** (octave / spec.anchors.num_scales)
                hx, hy = base * ax / 2, base * ay / 2
                per.append(torch.stack([cy - hy, cx - hx, cy + hy, cx + hx], dim=-1).reshape(-1, 4))
        out.append(torch.stack(per, dim=1).reshape(-1, 4))  # (y, x, anchor)
    return torch.cat(out).float()


def flatten_outputs(class_outputs: list[torch.Tensor], box_outputs: list[torch.Tensor], num_classes: int):
    """Per-level head outputs -> ``[B, N, num_classes]`` logits and ``[B, N, 4]`` codes, anchor order."""
    b = class_outputs[0].shape[0]
    cls = torch.cat([c.permute(0, 2, 3, 1).reshape(b, -1, num_classes) for c in class_outputs], 1)
    box = torch.cat([x.permute(0, 2, 3, 1).reshape(b, -1, 4) for x in box_outputs], 1)
    return cls, box


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """``(ty, tx, th, tw)`` codes against ``(y1, x1, y2, x2)`` anchors -> ``(x1, y1, x2, y2)`` boxes."""
    ya = (anchors[..., 0] + anchors[..., 2]) / 2
    xa = (anchors[..., 1] + anchors[..., 3]) / 2
    ha = anchors[..., 2] - anchors[..., 0]
    wa = anchors[..., 3] - anchors[..., 1]
    ty, tx, th, tw = codes.unbind(-1)
    w = torch.exp(tw) * wa
    h = torch.exp(th) * ha
    yc = ty * ha + ya
    xc = tx * wa + xa
    return torch.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], dim=-1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of every box in ``a`` ``[N, 4]`` with every box in ``b`` ``[M, 4]`` (x1, y1, x2, y2)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, by decreasing score (torchvision.ops.nms's contract:
    a box is dropped when its IoU with a kept, higher-scoring box is > ``iou_threshold``)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])
    n = order.numel()
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    over = iou > iou_threshold
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """NMS within each class (torchvision.ops.batched_nms's contract): boxes of different classes
    are moved apart by ``class * (max coordinate + 1)`` so that they never overlap."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    offset = classes.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes - boxes.min() + offset, scores, iou_threshold)


def detect(spec: DetectorSpec, class_outputs, box_outputs, *, score_threshold: float = 0.05,
           iou_threshold: float = 0.5, max_candidates: int = 5000, max_detections: int = 100,
           anchors: torch.Tensor | None = None) -> list[dict]:
    """Per image: the ``max_candidates`` best (anchor, class) scores, decoded, class-wise NMS,
    the best ``max_detections``.  Returns ``[{"boxes": [K, 4], "scores": [K], "classes": [K]}]``."""
    resolution = class_outputs[0].shape[-1] << spec.levels.min
    anchors = anchor_boxes(spec, resolution) if anchors is None else anchors
    cls, codes = flatten_outputs(class_outputs, box_outputs, spec.num_classes)
    results = []
    for logits, code in zip(cls, codes):
        scores = torch.sigmoid(logits.float()).reshape(-1)
        k = min(max_candidates, scores.numel())
        top, idx = scores.topk(k)
        mask = top > score_threshold
        top, idx = top[mask], idx[mask]
        anchor_idx = torch.div(idx, spec.num_classes, rounding_mode="floor")
        label = idx % spec.num_classes
        boxes = decode_boxes(code[anchor_idx].float(), anchors[anchor_idx])
        keep = batched_nms(boxes, top, label, iou_threshold)[:max_detections]
        results.append({"boxes": boxes[keep], "scores": top[keep], "classes": label[keep]})
    return results

