"""The materializer: spec -> ``torch.nn.Module``, built once.

The builder owns every rule that spans layers: chaining input widths, giving the
first layer of a stage the stage's stride, and the stochastic-depth ramp over the
global layer index (all three are :func:`nas.spec.plan_layers`).  ``forward``
never looks at the spec again.

Module names follow the architecture: ``stem``, ``stages.<i>.<j>``, ``head``,
``pool``, ``dropout``, ``classifier``.

:class:`Network` takes plain values, not a :class:`~nas.spec.Spec`: exported Python
code embeds it verbatim (with :mod:`nas.blocks` and :func:`~nas.spec.plan_layers`),
so the exported class is this class and cannot drift from it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .blocks import LAYERS, ConvBNAct
from .spec import Spec, plan_layers

__all__ = ["Network", "build_model", "init_reference_weights"]


def init_reference_weights(modules) -> None:
    """The reference initialisation (torchvision / TF EfficientNet) of ``modules``, in order."""
    for m in modules:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            r = 1.0 / m.in_features ** 0.5  # PyTorch's default bound; 1/sqrt(out) is tuned for 1000 classes
            nn.init.uniform_(m.weight, -r, r)
            nn.init.zeros_(m.bias)


class Network(nn.Module):
    """stem -> stages -> head -> global average pool -> dropout -> linear classifier.

    ``stages`` are rows with the fields of :class:`nas.spec.Stage`; ``stem`` is
    ``(out_channels, kernel, stride)``.
    """

    def __init__(self, stages: Sequence, *, in_channels: int, num_classes: int, activation: str,
                 stem: tuple[int, int, int], head_channels: int, dropout: float, drop_connect_rate: float,
                 bn_eps: float, bn_momentum: float):
        super().__init__()
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum)
        stem_channels, stem_kernel, stem_stride = stem
        self.stem = ConvBNAct(in_channels, stem_channels, stem_kernel, stem_stride, activation=activation, **bn)
        layers: list[list[nn.Module]] = [[] for _ in stages]
        for p in plan_layers(stages, stem_channels, drop_connect_rate):
            s = p.stage
            layers[p.stage_index].append(LAYERS[s.op](
                in_channels=p.in_channels, out_channels=s.out_channels, kernel=s.kernel, stride=p.stride,
                expand_ratio=s.expand_ratio, se_ratio=s.se_ratio, skip=s.skip, activation=s.activation,
                se_activation=s.se_activation, drop_path=p.drop_path, **bn))
        self.stages = nn.Sequential(*[nn.Sequential(*stage) for stage in layers])
        self.head = ConvBNAct(stages[-1].out_channels, head_channels, 1, activation=activation, **bn)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(head_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        init_reference_weights(self.modules())

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.dropout(x))


def build_model(spec) -> Network:
    """Materialize a spec (a ``Spec`` or anything :func:`nas.load_spec` accepts)."""
    if not isinstance(spec, Spec):
        from .presets import load_spec
        spec = load_spec(spec)
    return Network(spec.stages, in_channels=spec.in_channels, num_classes=spec.num_classes,
                   activation=spec.activation, stem=(spec.stem.out_channels, spec.stem.kernel, spec.stem.stride),
                   head_channels=spec.head.out_channels, dropout=spec.dropout,
                   drop_connect_rate=spec.drop_connect_rate, bn_eps=spec.bn.eps, bn_momentum=spec.bn.momentum)
