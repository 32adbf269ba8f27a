"""A detection data set made from real images on disk: Fashion-MNIST items pasted onto larger canvases.

Each canvas (``size`` x ``size``, grey, black background) holds 1 .. ``max_objects``
items drawn from a classification split, each resized (bilinear) by a seeded scale
and pasted at a seeded position (overlaps keep the brighter pixel).  An item's box
is the tight box of its pixels above :data:`INK` after resizing, in canvas pixels
``(x1, y1, x2, y2)``; its class is the item's label.  Train canvases use the
source's train split, validation canvases its held-out split, so no item is shared.
Deterministic given the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["INK", "DetectionSplit", "DetectionData", "make_canvases", "make_detection_data"]

INK = 32  # of 255: an item's faint anti-aliased border is background, not object


@dataclass
class DetectionSplit:
    images: torch.Tensor  # uint8 [N, 1, S, S]
    boxes: list  # per canvas: float [K, 4] (x1, y1, x2, y2)
    classes: list  # per canvas: int64 [K]

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class DetectionData:
    name: str
    classes: list
    size: int
    train: DetectionSplit
    val: DetectionSplit

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> str:
        n_obj = sum(len(c) for c in self.train.classes)
        return (f"{self.name}: {len(self.train)} train / {len(self.val)} val canvases of {self.size} px, "
                f"{n_obj} train objects, {self.num_classes} classes")


def make_canvases(items: torch.Tensor, labels: torch.Tensor, n: int, size: int, seed: int, *,
                  max_objects: int = 3, scale: tuple[float, float] = (0.7, 1.5)) -> DetectionSplit:
    """``n`` canvases from ``items`` (uint8 ``[M, 1, h, w]``) and their ``labels``."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    all_boxes, all_classes = [], []
    for i in range(n):
        k = int(torch.randint(1, max_objects + 1, (1,), generator=g))
        boxes, classes = [], []
        for _ in range(k):
            j = int(torch.randint(0, items.shape[0], (1,), generator=g))
            s = scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=g))
            h = max(4, min(size, round(items.shape[2] * s)))
            w = max(4, min(size, round(items.shape[3] * s)))
            item = F.interpolate(items[j:j + 1].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            item = item.round().clamp(0, 255).to(torch.uint8)
            ys, xs = torch.nonzero(item > INK, as_tuple=True)
            if ys.numel() == 0:
                continue  # an empty item has no box
            y0 = int(torch.randint(0, size - h + 1, (1,), generator=g))
            x0 = int(torch.randint(0, size - w + 1, (1,), generator=g))
            region = images[i, 0, y0:y0 + h, x0:x0 + w]
            torch.maximum(region, item, out=region)
            boxes.append([x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1])
            classes.append(int(labels[j]))
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        all_classes.append(torch.tensor(classes, dtype=torch.int64))
    return DetectionSplit(images, all_boxes, all_classes)


def make_detection_data(dataset, size: int, n_train: int, n_val: int, seed: int = 0, *, max_objects: int = 3,
                        scale: tuple[float, float] = (0.7, 1.5)) -> DetectionData:
    """Canvases from a :class:`nas.data.Dataset` (its ``train_x``/``val_x`` items; grey expected)."""
    tx, vx = dataset.train_x, dataset.val_x
    if tx.shape[1] != 1:  # colour items: pasted as grey
        tx, vx = tx.float().mean(1, keepdim=True).to(torch.uint8), vx.float().mean(1, keepdim=True).to(torch.uint8)
    train = make_canvases(tx, dataset.train_y, n_train, size, seed, max_objects=max_objects, scale=scale)
    val = make_canvases(vx, dataset.val_y, n_val, size, seed + 1, max_objects=max_objects, scale=scale)
    return DetectionData(f"{dataset.name} pasted", list(dataset.classes), size, train, val)
