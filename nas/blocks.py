"""Building blocks: only ``nn.Module``s, no spec parsing.

Every layer class takes the same keyword arguments (those :class:`nas.build.Network`
passes: ``in_channels``, ``out_channels``, ``kernel``, ``stride``, ``expand_ratio``,
``se_ratio``, ``skip``, ``activation``, ``se_activation``, ``drop_path``, ``bn_eps``,
``bn_momentum``), so the builder constructs any op in one line.  Shortcut handling
is flat in ``forward``: ``shortcut = ...; x = drop_path(x) + shortcut``.  Module
layouts mirror torchvision's EfficientNet so parameter counts match it exactly.
Everything here is TorchScript-scriptable.

An op is declared once: its module here, in :data:`LAYERS`, and everything else about
it (its analytic cost, the spec fields it pins, its description) in its entry of
:data:`nas.ops.OPS` (kept torch-free, so in that module).
Exported Python code (:func:`nas.export.export_python`) embeds this file verbatim
after its imports, so it may import only torch, the standard library and the width
rules of :mod:`nas.spec` (which the exporter embeds too); the exporter checks this.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .spec import expanded_channels, se_channels

__all__ = [
    "ACTIVATIONS",
    "make_activation",
    "ConvBNAct",
    "SqueezeExcite",
    "StochasticDepth",
    "PoolShortcut",
    "MBConv",
    "DepthwiseSeparable",
    "RegularConv",
    "ProjectingIdentity",
    "LAYERS",
]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "swish": lambda: nn.SiLU(inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
}


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class ConvBNAct(nn.Sequential):
    """Conv (no bias, 'same' padding for odd kernels) -> BN -> optional activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 activation: str | None = "swish", bn_eps: float = 1e-3, bn_momentum: float = 0.01):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding=(kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if activation is not None:
            layers.append(make_activation(activation))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(act(fc1(avgpool(x))))), with 1x1 convs as the FC layers."""

    def __init__(self, channels: int, squeeze_channels: int, activation: str = "swish"):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # counted by fvcore, unlike x.mean()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = make_activation(activation)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
        return x * scale


class StochasticDepth(nn.Module):
    """Drops the whole residual branch per sample with probability ``p`` (training only)."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty([x.shape[0], 1, 1, 1], dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PoolShortcut(nn.Module):
    """The MnasNet pooling skip: avg-pool to the output size, 1x1 conv + BN to the output width.

    Pooling uses kernel = stride and ceil mode, so it matches the output size of a
    'same'-padded strided conv (ceil(H / stride)) at any resolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, bn_eps: float, bn_momentum: float):
        super().__init__()
        self.pool = nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        self.proj = (ConvBNAct(in_channels, out_channels, 1, activation=None, bn_eps=bn_eps, bn_momentum=bn_momentum)
                     if in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.pool(x))


class _Layer(nn.Module):
    """Shared shortcut logic; subclasses fill ``self.body`` (an nn.Sequential)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, skip: str, drop_path: float,
                 bn_eps: float, bn_momentum: float):
        super().__init__()
        self.has_skip = (skip == "identity" and stride == 1 and in_channels == out_channels) or skip == "pool"
        if skip == "pool" and (stride != 1 or in_channels != out_channels):
            self.shortcut: nn.Module = PoolShortcut(in_channels, out_channels, stride, bn_eps, bn_momentum)
        else:
            self.shortcut = nn.Identity()
        self.drop_path = StochasticDepth(drop_path if self.has_skip else 0.0)
        self.body = nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.has_skip:
            shortcut = self.shortcut(x)
            return self.drop_path(self.body(x)) + shortcut
        return self.body(x)


class MBConv(_Layer):
    """Inverted residual: 1x1 expand (if expand_ratio != 1) -> kxk depthwise -> SE -> 1x1 project."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                 se_ratio: float, skip: str, activation: str, se_activation: str, drop_path: float,
                 bn_eps: float, bn_momentum: float):
        super().__init__(in_channels, out_channels, stride, skip, drop_path, bn_eps, bn_momentum)
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        mid = expanded_channels(in_channels, expand_ratio)
        if mid != in_channels:
            self.body.add_module("expand", ConvBNAct(in_channels, mid, 1, activation=activation, **bn))
        self.body.add_module("depthwise", ConvBNAct(mid, mid, kernel, stride, groups=mid, activation=activation, **bn))
        if se_ratio > 0:
            self.body.add_module("se", SqueezeExcite(mid, se_channels(in_channels, se_ratio), se_activation))
        self.body.add_module("project", ConvBNAct(mid, out_channels, 1, activation=None, **bn))


class DepthwiseSeparable(MBConv):
    """kxk depthwise -> SE -> 1x1 linear projection (MBConv with expand ratio 1)."""


class RegularConv(_Layer):
    """A full kxk conv (-> SE); with expand_ratio > 1, widen then 1x1 project (Fused-MBConv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                 se_ratio: float, skip: str, activation: str, se_activation: str, drop_path: float,
                 bn_eps: float, bn_momentum: float):
        super().__init__(in_channels, out_channels, stride, skip, drop_path, bn_eps, bn_momentum)
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        fused = expand_ratio != 1
        mid = expanded_channels(in_channels, expand_ratio) if fused else out_channels
        self.body.add_module("conv", ConvBNAct(in_channels, mid, kernel, stride, activation=activation, **bn))
        if se_ratio > 0:
            self.body.add_module("se", SqueezeExcite(mid, se_channels(in_channels, se_ratio), se_activation))
        if fused:
            self.body.add_module("project", ConvBNAct(mid, out_channels, 1, activation=None, **bn))


class ProjectingIdentity(_Layer):
    """The input unchanged when stride and width are kept, else 1x1 conv (stride, no bias) + BN (NAS-Bench-Macro)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                 se_ratio: float, skip: str, activation: str, se_activation: str, drop_path: float,
                 bn_eps: float, bn_momentum: float):
        super().__init__(in_channels, out_channels, stride, skip, drop_path, bn_eps, bn_momentum)
        if stride != 1 or in_channels != out_channels:
            self.body.add_module("project", ConvBNAct(in_channels, out_channels, 1, stride, activation=None,
                                                      bn_eps=bn_eps, bn_momentum=bn_momentum))


LAYERS: dict[str, type[_Layer]] = {
    "mbconv": MBConv,
    "dwconv": DepthwiseSeparable,
    "conv": RegularConv,
    "identity": ProjectingIdentity,
}
