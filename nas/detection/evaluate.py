"""COCO-style mAP@[.5:.95] and mAP@.5 with pycocotools (the kept library; ``pip install pycocotools``)."""
from __future__ import annotations

import contextlib
import io

__all__ = ["coco_map", "MissingPycocotools"]


class MissingPycocotools(ImportError):
    pass


def coco_map(predictions: list[dict], boxes: list, classes: list, size: int) -> dict:
    """``predictions[i]``: ``{"boxes": [K, 4] (x1, y1, x2, y2), "scores": [K], "classes": [K]}`` for image ``i``;
    ``boxes[i]``, ``classes[i]``: its ground truth.  Returns ``{"map": AP@[.5:.95], "map50": AP@.5}``
    (pycocotools' COCOeval, bbox, up to 100 detections per image)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingPycocotools("mAP needs pycocotools: pip install pycocotools") from None
    n_classes = 1 + max([int(c.max()) for c in classes if len(c)] + [0])
    images, anns, dets = [], [], []
    for i, (b, c) in enumerate(zip(boxes, classes)):
        images.append({"id": i, "width": size, "height": size})
        for box, cl in zip(b.tolist(), c.tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(cl), "bbox": [box[0], box[1], w, h],
                         "area": w * h, "iscrowd": 0})
    for i, p in enumerate(predictions):
        for box, s, cl in zip(p["boxes"].tolist(), p["scores"].tolist(), p["classes"].tolist()):
            dets.append({"image_id": i, "category_id": int(cl), "bbox": [box[0], box[1], box[2] - box[0],
                                                                          box[3] - box[1]], "score": float(s)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k, "name": str(k)} for k in range(max(n_classes, 1))]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt.createIndex()
        if not dets:
            return {"map": 0.0, "map50": 0.0}
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": max(0.0, float(ev.stats[0])), "map50": max(0.0, float(ev.stats[1]))}
