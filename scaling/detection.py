"""EfficientDet compound scaling, the published D0-D7 table, and the generator of the detector presets.

The paper's rules for a compound coefficient phi (EfficientDet, Tan, Pang & Le 2020, eqs. 1-3):

* BiFPN width ``64 * 1.35**phi``, rounded here to the nearest multiple of 8 (every
  width in the table is one); BiFPN depth ``3 + phi``;
* box/class net depth ``3 + floor(phi / 3)``;
* input resolution ``512 + 128 * phi`` (a multiple of 128 = 2**7, the largest stride);
* backbone: the classifier's compound rule (:func:`scaling.compound.compound_scale`).

The published table rounds and caps these (D2 width 112 where the formula gives
120, D4 224 for 216, D5 7 BiFPN layers for 8, D5 1280 px for 1152, D6-D7 capped
at width 384 and 8 layers, D7 1536 px, and B6 backbones for D6 and D7, which also
fuse by plain sum): :data:`PUBLISHED` is that table, and the presets are it.
Relative to a base detector the rules are written as growth from the base's
values (width ``w0 * 1.35**phi``, depth ``d0 + phi``, head ``h0 + floor(phi/3)``,
resolution ``r0 + 128 * phi``), which is the paper's formula for D0's values.

``python -m scaling.detection`` rewrites ``nas/detection/presets/*.json``; a
test regenerates them in memory and compares.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

from nas.detection.spec import BiFPN, DetectionHead, DetectorSpec
from nas.presets import load_preset
from nas.spec import Spec

from .compound import PAPER_COEFFICIENTS, ScalingError, compound_scale

__all__ = ["PublishedDetector", "PUBLISHED", "published_detector", "all_detector_presets", "write_detector_presets",
           "bifpn_width", "detector_from_backbone", "scale_detector", "WIDTH_FACTOR", "RESOLUTION_STEP",
           "PRESET_DIR", "D0_TEMPLATE"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "nas" / "detection" / "presets"

WIDTH_FACTOR = 1.35  # the paper's grid search for the BiFPN width factor
RESOLUTION_STEP = 128  # 2**7: the input must divide by the stride of P7


@dataclass(frozen=True)
class PublishedDetector:
    backbone: str
    resolution: int
    width: int
    repeats: int
    head: int
    fusion: str = "fast_normalized"
    anchor_scale: float = 4.0


#: EfficientDet Table 1 (google/automl hparams_config.py; effdet's tf_efficientdet_dN).
PUBLISHED: dict[str, PublishedDetector] = {
    "efficientdet-d0": PublishedDetector("efficientnet-b0", 512, 64, 3, 3),
    "efficientdet-d1": PublishedDetector("efficientnet-b1", 640, 88, 4, 3),
    "efficientdet-d2": PublishedDetector("efficientnet-b2", 768, 112, 5, 3),
    "efficientdet-d3": PublishedDetector("efficientnet-b3", 896, 160, 6, 4),
    "efficientdet-d4": PublishedDetector("efficientnet-b4", 1024, 224, 7, 4),
    "efficientdet-d5": PublishedDetector("efficientnet-b5", 1280, 288, 7, 4),
    # D6 and D7 fuse by plain sum (the official code's "bifpn_sum"); D7 keeps D6's network at 1536 px
    # with a larger anchor scale.
    "efficientdet-d6": PublishedDetector("efficientnet-b6", 1280, 384, 8, 5, "sum"),
    "efficientdet-d7": PublishedDetector("efficientnet-b6", 1536, 384, 8, 5, "sum", 5.0),
}

#: D0's settings outside the backbone: the template for wrapping any classification spec.
D0_TEMPLATE = {"levels": {"min": 3, "max": 7}, "bifpn": {"width": 64, "repeats": 3, "fusion": "fast_normalized"},
               "head": {"repeats": 3},
               "anchors": {"num_scales": 3, "aspect_ratios": [[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]], "anchor_scale": 4.0},
               "num_classes": 90, "resolution": 512, "activation": "swish", "bn": {"eps": 0.001, "momentum": 0.01}}


def detector_from_backbone(backbone: Spec, *, name: str | None = None, num_classes: int | None = None,
                           provenance: dict | None = None, **overrides) -> DetectorSpec:
    """Wrap a classification spec into a detector with D0's BiFPN, heads, anchors and 512 px input
    (90 classes, COCO's, unless ``num_classes``); ``overrides`` replace top-level fields."""
    d = {"format": "nas-detector", "version": 1, "name": name if name is not None else f"{backbone.name or 'spec'}-det",
         "backbone": backbone.to_dict(), **{k: v for k, v in D0_TEMPLATE.items()}}
    if num_classes is not None:
        d["num_classes"] = num_classes
    d.update(overrides)
    if provenance:
        d["provenance"] = provenance
    return DetectorSpec.from_dict(d)


def published_detector(name: str) -> DetectorSpec:
    """A member of the published EfficientDet family, its backbone the published EfficientNet."""
    p = PUBLISHED[name]
    backbone = load_preset(p.backbone)
    anchors = dict(D0_TEMPLATE["anchors"], anchor_scale=p.anchor_scale)
    prov = {"preset": name, "source": "EfficientDet Table 1 (Tan, Pang & Le 2020); google/automl hparams_config.py"}
    return detector_from_backbone(backbone, name=name, provenance=prov, resolution=p.resolution,
                                  bifpn={"width": p.width, "repeats": p.repeats, "fusion": p.fusion},
                                  head={"repeats": p.head}, anchors=anchors)


def bifpn_width(base_width: int, phi: int) -> int:
    """``base_width * 1.35**phi`` to the nearest multiple of 8 (at least 8)."""
    return max(8, int(round(base_width * WIDTH_FACTOR ** phi / 8)) * 8)


def scale_detector(base: DetectorSpec, phi: int, alpha: float = PAPER_COEFFICIENTS[0],
                   beta: float = PAPER_COEFFICIENTS[1], gamma: float = PAPER_COEFFICIENTS[2], *,
                   name: str | None = None, max_params: float | None = None) -> DetectorSpec:
    """EfficientDet compound scaling of ``base`` by a whole ``phi`` (see the module docstring).

    The backbone is scaled by :func:`compound_scale` with (alpha, beta, gamma); its own
    resolution is the classifier rule's, the detector's is ``base + 128 * phi``.
    Raises :class:`ScalingError` (one line) for phi that is not a whole number >= 0 or
    a result beyond the spec limits.
    """
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not math.isfinite(phi) or phi < 0 \
            or float(phi) != int(phi):
        raise ScalingError(f"detector scaling needs a whole phi >= 0 (BiFPN and head depths are layer counts), "
                           f"got {phi}")
    phi = int(phi)
    if phi > 64:
        raise ScalingError(f"phi={phi} is far too large for a detector")
    kwargs = {} if max_params is None else {"max_params": max_params}
    backbone = compound_scale(base.backbone, phi, alpha, beta, gamma, **kwargs) if phi else base.backbone
    prov = {"scaling": {"rule": "efficientdet", "base": base.name, "base_fingerprint": base.fingerprint(), "phi": phi,
                        "alpha": alpha, "beta": beta, "gamma": gamma, "width_factor": WIDTH_FACTOR,
                        "bifpn_width_formula": base.bifpn.width * WIDTH_FACTOR ** phi}}
    from nas.spec import SpecError

    try:
        return base.replace(
            name=name if name is not None else f"{base.name or 'detector'}-phi{phi}",
            backbone=backbone,
            resolution=base.resolution + RESOLUTION_STEP * phi,
            bifpn=BiFPN(bifpn_width(base.bifpn.width, phi), base.bifpn.repeats + phi, base.bifpn.fusion),
            head=DetectionHead(base.head.repeats + phi // 3),
            provenance=prov)
    except SpecError as e:
        raise ScalingError(f"phi={phi} gives an invalid detector: {e}") from None


def all_detector_presets() -> dict[str, DetectorSpec]:
    return {name: published_detector(name) for name in PUBLISHED}


def write_detector_presets(folder: Path = PRESET_DIR) -> list[Path]:
    paths = []
    for name, spec in all_detector_presets().items():
        path = Path(folder) / f"{name}.json"
        spec.save(path)
        paths.append(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scaling.detection", description="Rewrite the detector presets.")
    ap.add_argument("--output", default=str(PRESET_DIR), help=f"folder (default {PRESET_DIR})")
    args = ap.parse_args(argv)
    for p in write_detector_presets(Path(args.output)):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
