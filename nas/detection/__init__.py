"""Detectors: EfficientDet's BiFPN and class/box heads around any classification spec.

Rooms, one job each: :mod:`.spec` (the versioned ``nas-detector`` format),
:mod:`.build` (spec -> module), :mod:`.cost` (analytic params and FLOPs),
:mod:`.postprocess` (anchors, box decoding, batched NMS), :mod:`.export` (ONNX),
:mod:`.presets` (efficientdet-d0 ... d7); for training, :mod:`.data` (items pasted on
canvases), :mod:`.loss` (assignment, focal + Huber), :mod:`.evaluate` (COCO mAP with
pycocotools) and :mod:`.train`.  Torch loads only with the modules that need it::

    from nas.detection import load_detector, detector_cost
    spec = load_detector("efficientdet-d0")
    detector_cost(spec).params          # 3,880,067, effdet's tf_efficientdet_d0
"""
from __future__ import annotations

import importlib

from .cost import DetectorCost, detector_cost
from .presets import detector_names, is_detector, load_detector, load_detector_preset
from .spec import DetectorSpec

__all__ = ["DetectorSpec", "DetectorCost", "detector_cost", "load_detector", "load_detector_preset",
           "detector_names", "is_detector", "build_detector"]


def __getattr__(name):  # PEP 562: keep this package free of torch until a module is built
    if name == "build_detector":
        value = importlib.import_module("nas.detection.build").build_detector
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas.detection' has no attribute {name!r}")
