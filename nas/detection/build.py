"""The detector materializer: DetectorSpec -> ``nn.Module`` returning per-level class and box outputs.

The module structure mirrors effdet's ``EfficientDet`` (and the TF reference) so
that parameter counts are equal: the backbone's stem and stages (built by
:func:`nas.build.build_model`, its head and classifier dropped), the extra levels'
resampling, ``bifpn.repeats`` BiFPN layers, and class / box nets whose separable
convs are shared across levels while each level has its own BN.

``forward(x)`` returns ``(class_outputs, box_outputs)``: lists over the levels of
``[B, A * num_classes, H, W]`` and ``[B, A * 4, H, W]`` tensors (A anchors per
location), the raw logits and box codes; :mod:`nas.detection.postprocess` turns
them into boxes.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..blocks import make_activation
from ..build import build_model, init_reference_weights
from ..spec import iter_layers
from .spec import FUSION_EPS, DetectorSpec, backbone_taps, bifpn_nodes

__all__ = ["SeparableConv", "Resample", "FusionNode", "BiFPNLayer", "DetectionNet", "Backbone", "Detector",
           "build_detector"]


class SeparableConv(nn.Sequential):
    """kxk depthwise (no bias) -> 1x1 pointwise (with bias, as the TF port has) [-> BN]."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, bn: dict | None = None):
        layers = [nn.Conv2d(in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels, bias=False),
                  nn.Conv2d(in_channels, out_channels, 1, bias=True)]
        if bn is not None:
            layers.append(nn.BatchNorm2d(out_channels, eps=bn["eps"], momentum=bn["momentum"]))
        super().__init__(*layers)


class Resample(nn.Sequential):
    """Bring a feature to another level and width: [1x1 conv + BN] then [2x max pool | 2x nearest upsampling].

    The conv runs before the pooling (the reference's order); it is there only when the
    widths differ."""

    def __init__(self, in_channels: int, out_channels: int, step: int, bn: dict):
        layers: list[nn.Module] = []
        if in_channels != out_channels:
            layers += [nn.Conv2d(in_channels, out_channels, 1, bias=True),
                       nn.BatchNorm2d(out_channels, eps=bn["eps"], momentum=bn["momentum"])]
        if step > 0:
            layers.append(nn.MaxPool2d(3, 2, padding=1))  # out = ceil(in / 2), like TF's 'same'
        elif step < 0:
            layers.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
        super().__init__(*layers)


class FusionNode(nn.Module):
    """Resample each input, fuse (fast normalized or plain sum), then act -> separable conv -> BN."""

    def __init__(self, in_channels: list[int], steps: list[int], width: int, fusion: str, activation: str, bn: dict):
        super().__init__()
        self.resample = nn.ModuleList([Resample(c, width, s, bn) for c, s in zip(in_channels, steps)])
        self.fast = fusion == "fast_normalized"
        self.weights = nn.Parameter(torch.ones(len(in_channels))) if self.fast else None
        self.act = make_activation(activation)
        self.conv = SeparableConv(width, width, 3, bn)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        xs = [r(x) for r, x in zip(self.resample, inputs)]
        if self.weights is not None:
            w = torch.relu(self.weights)
            norm = w.sum() + FUSION_EPS
            out = xs[0] * (w[0] / norm)
            for i in range(1, len(xs)):
                out = out + xs[i] * (w[i] / norm)
        else:
            out = xs[0]
            for x in xs[1:]:
                out = out + x
        return self.conv(self.act(out))


class BiFPNLayer(nn.Module):
    """One BiFPN cell over ``n`` levels (topology: :func:`nas.detection.spec.bifpn_nodes`)."""

    def __init__(self, spec: DetectorSpec, in_channels: list[int], bn: dict):
        super().__init__()
        levels = list(range(spec.levels.min, spec.levels.max + 1))
        self.n = len(levels)
        feat_levels = list(levels)
        feat_channels = list(in_channels)
        self.inputs: list[list[int]] = []
        nodes = []
        for node in bifpn_nodes(spec.levels):
            nodes.append(FusionNode([feat_channels[i] for i in node.inputs],
                                    [node.level - feat_levels[i] for i in node.inputs],
                                    spec.bifpn.width, spec.bifpn.fusion, spec.activation, bn))
            self.inputs.append(list(node.inputs))
            feat_levels.append(node.level)
            feat_channels.append(spec.bifpn.width)
        self.nodes = nn.ModuleList(nodes)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = list(feats)
        for node, idx in zip(self.nodes, self.inputs):
            feats.append(node([feats[i] for i in idx]))
        return feats[-self.n:]


class DetectionNet(nn.Module):
    """The class or box net: shared separable convs, a BN per (layer, level), a shared prediction conv."""

    def __init__(self, width: int, repeats: int, n_levels: int, outputs: int, activation: str, bn: dict):
        super().__init__()
        self.convs = nn.ModuleList([SeparableConv(width, width, 3) for _ in range(repeats)])
        self.bns = nn.ModuleList([
            nn.ModuleList([nn.BatchNorm2d(width, eps=bn["eps"], momentum=bn["momentum"]) for _ in range(n_levels)])
            for _ in range(repeats)])
        self.act = make_activation(activation)
        self.predict = SeparableConv(width, outputs, 3)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for level, x in enumerate(feats):
            for conv, bns in zip(self.convs, self.bns):
                x = self.act(bns[level](conv(x)))
            outs.append(self.predict(x))
        return outs


class Backbone(nn.Module):
    """The classification spec's stem and layers, cut into segments that end at each level's tap."""

    def __init__(self, spec: DetectorSpec):
        super().__init__()
        net = build_model(spec.backbone)  # the one classification builder; head and classifier are dropped
        self.stem = net.stem
        layers = [layer for stage in net.stages for layer in stage]
        taps = backbone_taps(spec.backbone, spec.levels.min)
        segments, start = [], 0
        for t in taps:
            segments.append(nn.Sequential(*layers[start:t + 1]))
            start = t + 1
        self.segments = nn.ModuleList(segments)
        self.out_channels = [self._width(spec, t) for t in taps]

    @staticmethod
    def _width(spec: DetectorSpec, tap: int) -> int:
        return next(p.stage.out_channels for p in iter_layers(spec.backbone) if p.global_index == tap)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for seg in self.segments:
            x = seg(x)
            feats.append(x)
        return feats


class Detector(nn.Module):
    """backbone -> extra levels -> BiFPN x repeats -> (class net, box net) on every level."""

    def __init__(self, spec: DetectorSpec):
        super().__init__()
        bn = {"eps": spec.bn.eps, "momentum": spec.bn.momentum}
        width = spec.bifpn.width
        self.backbone = Backbone(spec)
        channels = list(self.backbone.out_channels)
        extra = []
        for _ in range(spec.levels.max - spec.levels.min + 1 - len(channels)):
            extra.append(Resample(channels[-1], width, 1, bn))
            channels.append(width)
        self.extra = nn.ModuleList(extra)
        cells = []
        for _ in range(spec.bifpn.repeats):
            cells.append(BiFPNLayer(spec, channels, bn))
            channels = [width] * len(channels)
        self.bifpn = nn.Sequential(*cells)
        a = spec.anchors.per_location
        n = spec.levels.count
        self.class_net = DetectionNet(width, spec.head.repeats, n, a * spec.num_classes, spec.activation, bn)
        self.box_net = DetectionNet(width, spec.head.repeats, n, a * 4, spec.activation, bn)
        self.num_classes = spec.num_classes
        self._init_weights()

    def _init_weights(self) -> None:
        # the backbone is initialised by the classification builder; the rest as it would be
        init_reference_weights(m for name, m in self.named_modules() if not name.startswith("backbone."))
        # The focal-loss prior (RetinaNet): every anchor starts at p = 0.01 foreground, so the
        # loss of the many background anchors does not swamp the first steps.
        nn.init.constant_(self.class_net.predict[1].bias, -math.log((1 - 0.01) / 0.01))

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.backbone(x)
        for r in self.extra:
            feats.append(r(feats[-1]))
        feats = self.bifpn(feats)
        return self.class_net(feats), self.box_net(feats)


def build_detector(spec) -> Detector:
    """Materialize a detector spec (a ``DetectorSpec`` or anything :func:`load_detector` accepts)."""
    if not isinstance(spec, DetectorSpec):
        from .presets import load_detector
        spec = load_detector(spec)
    return Detector(spec)
