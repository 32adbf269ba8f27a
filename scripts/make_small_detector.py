"""Write results/detection/d0-small.json: EfficientDet-D0 scaled down for 64 px canvases on 2 CPU cores.

Backbone EfficientNet-B0 at half width (the reference rounding), levels P3-P6 (64 px divides by 2**6),
BiFPN 32 wide and 2 deep, heads 2 deep, anchor scale 2 (the smallest anchor 16 px, for 20-42 px items),
10 classes.  ``python scripts/make_small_detector.py``
"""
from pathlib import Path

from nas.presets import load_preset
from scaling.compound import scale_spec
from scaling.detection import detector_from_backbone

OUT = Path(__file__).resolve().parent.parent / "results" / "detection" / "d0-small.json"

backbone = scale_spec(load_preset("efficientnet-b0"), width=0.5, name="efficientnet-b0-w0.5",
                      provenance={"scaling": {"base": "efficientnet-b0", "width_multiplier": 0.5}})
spec = detector_from_backbone(
    backbone, name="efficientdet-d0-small", num_classes=10, resolution=64, levels={"min": 3, "max": 6},
    bifpn={"width": 32, "repeats": 2, "fusion": "fast_normalized"}, head={"repeats": 2},
    anchors={"num_scales": 3, "aspect_ratios": [[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]], "anchor_scale": 2.0},
    provenance={"base": "efficientdet-d0", "made_by": "scripts/make_small_detector.py"})
spec.save(OUT)
print(OUT)
