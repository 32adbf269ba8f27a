"""Analytic params and FLOPs of a detector, per part (backbone, BiFPN, class net, box net).

The convention is :mod:`nas.cost`'s (fvcore's on the materialized module, eval,
batch 1): one multiply-add = one flop; convs, BN (2 per element) and nearest
upsampling (1 per output element: fvcore's ``upsample_nearest2d`` handle) are
counted; max pooling, the fusion's weighted sum, activations and adds are not.
The backbone is :func:`nas.cost.cost` of the classification spec at the
detector's resolution without its head row (the 1x1 head conv, pooling and
classifier, which a detector does not build).

>>> from nas.detection import load_detector
>>> c = detector_cost(load_detector("efficientdet-d0"))
>>> c.params, [p.params for p in c.parts]
(3880067, [3595388, 196281, 69354, 19044])
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..cost import cost as classifier_cost
from ..spec import SpecError
from .spec import DetectorSpec, bifpn_nodes

__all__ = ["PartCost", "DetectorCost", "detector_cost"]


@dataclass
class PartCost:
    name: str
    params: int = 0
    flops: int = 0

    def conv(self, cin: int, cout: int, k: int, hw: int, groups: int = 1, bias: bool = False) -> None:
        self.params += cout * (cin // groups) * k * k + (cout if bias else 0)
        self.flops += cout * (cin // groups) * k * k * hw * hw

    def bn(self, c: int, hw: int, count_params: bool = True) -> None:
        if count_params:
            self.params += 2 * c
        self.flops += 2 * c * hw * hw

    def separable(self, cin: int, cout: int, hw: int) -> None:
        self.conv(cin, cin, 3, hw, groups=cin)  # depthwise, no bias
        self.conv(cin, cout, 1, hw, bias=True)  # pointwise

    def resample(self, cin: int, width: int, hw_in: int, hw_out: int) -> None:
        if cin != width:
            self.conv(cin, width, 1, hw_in, bias=True)  # before the pooling, as in the reference
            self.bn(width, hw_in)
        if hw_out > hw_in:
            self.flops += width * hw_out * hw_out  # nearest upsampling


@dataclass
class DetectorCost:
    params: int
    flops: int
    resolution: int
    parts: list[PartCost] = field(default_factory=list)
    backbone_stages: list = field(default_factory=list)  # nas.cost.StageCost rows, the head row left out
    num_anchors: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def detector_cost(spec, resolution: int | None = None) -> DetectorCost:
    """Params and FLOPs of a detector at ``resolution`` (default the spec's; it must be divisible
    by the largest stride), with the per-part breakdown."""
    if not isinstance(spec, DetectorSpec):
        from .presets import load_detector
        spec = load_detector(spec)
    res = spec.resolution if resolution is None else resolution
    largest = 1 << spec.levels.max
    if isinstance(res, bool) or not isinstance(res, int) or res < 1 or res % largest:
        raise SpecError("resolution", f"must be a positive multiple of the largest stride {largest}, got {res!r}")
    w = spec.bifpn.width
    levels = list(range(spec.levels.min, spec.levels.max + 1))
    size = {lvl: res >> lvl for lvl in levels}

    bc = classifier_cost(spec.backbone, res)
    rows = [r for r in bc.stages if r.name != "head"]
    backbone = PartCost("backbone", sum(r.params for r in rows), sum(r.flops for r in rows))

    bifpn = PartCost("bifpn")
    channels = []
    for lvl in spec.backbone_levels:
        channels.append(next(r.out_channels for r in reversed(rows) if r.out_resolution == size[lvl]))
    for lvl in levels[len(channels):]:  # extra levels: [1x1 conv + BN] at the level below, then max pool
        bifpn.resample(channels[-1], w, size[lvl - 1], size[lvl])
        channels.append(w)
    nodes = bifpn_nodes(spec.levels)
    for _ in range(spec.bifpn.repeats):
        feat_levels, feat_channels = list(levels), list(channels)
        for node in nodes:
            hw = size[node.level]
            for i in node.inputs:
                bifpn.resample(feat_channels[i], w, size[feat_levels[i]], hw)
            if spec.bifpn.fusion == "fast_normalized":
                bifpn.params += len(node.inputs)  # one fusion weight per input
            bifpn.separable(w, w, hw)
            bifpn.bn(w, hw)
            feat_levels.append(node.level)
            feat_channels.append(w)
        channels = [w] * len(levels)

    a = spec.anchors.per_location
    heads = []
    for name, outputs in (("class_net", a * spec.num_classes), ("box_net", a * 4)):
        part = PartCost(name)
        part.params += spec.head.repeats * (9 * w + w * w + w)  # separable convs shared across levels
        part.params += spec.head.repeats * len(levels) * 2 * w  # a BN per layer and level
        part.params += 9 * w + w * outputs + outputs  # the shared prediction conv
        for lvl in levels:
            hw = size[lvl]
            part.flops += spec.head.repeats * (9 * w + w * w) * hw * hw
            for _ in range(spec.head.repeats):
                part.bn(w, hw, count_params=False)
            part.flops += (9 * w + w * outputs) * hw * hw
        heads.append(part)

    parts = [backbone, bifpn, *heads]
    return DetectorCost(params=sum(p.params for p in parts), flops=sum(p.flops for p in parts), resolution=res,
                        parts=parts, backbone_stages=rows, num_anchors=spec.num_anchors(res))
