"""Analytic cost model: parameters and FLOPs from the spec alone.

Convention (fvcore's, measured with ``fvcore.nn.FlopCountAnalysis`` on the
materialized module in eval mode, batch 1):

* one multiply-add = one flop;
* conv: ``C_out * (C_in / groups) * k * k * H_out * W_out`` (bias not counted);
* linear: ``in * out`` (bias not counted);
* batch norm (inference): 2 flops per element (scale and shift);
* adaptive average pool (SE squeeze and the head's global pool): 1 flop per
  *input* element;
* not counted: activations, the SE gate and multiply, residual adds, dropout,
  stochastic depth, and the ``avg_pool2d`` of the pooling skip (fvcore has no
  handle for it).

>>> from nas.presets import load_preset
>>> c = cost(load_preset("efficientnet-b0"))
>>> c.params, c.flops
(5288548, 401659392)

:func:`fvcore_flops` is the cross-check; it is the only place fvcore is used.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field

from .spec import Spec, SpecError, expanded_channels, iter_layers, se_channels

__all__ = ["Cost", "StageCost", "cost", "conv_out", "fvcore_flops", "count_params"]


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded conv with an odd kernel (and of the ceil-mode skip pool)."""
    return (size - 1) // stride + 1


@dataclass
class StageCost:
    name: str
    op: str
    kernel: int
    repeats: int
    in_channels: int
    out_channels: int
    in_resolution: int
    out_resolution: int
    params: int = 0
    flops: int = 0


@dataclass
class Cost:
    params: int
    flops: int
    resolution: int
    stages: list[StageCost] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class _Acc:
    """Accumulates params and flops for one row of the breakdown."""

    def __init__(self, row: StageCost):
        self.row = row

    def conv(self, cin: int, cout: int, k: int, out_hw: int, groups: int = 1, bias: bool = False) -> None:
        self.row.params += cout * (cin // groups) * k * k + (cout if bias else 0)
        self.row.flops += cout * (cin // groups) * k * k * out_hw * out_hw

    def bn(self, c: int, hw: int) -> None:
        self.row.params += 2 * c
        self.row.flops += 2 * c * hw * hw

    def conv_bn(self, cin: int, cout: int, k: int, out_hw: int, groups: int = 1) -> None:
        self.conv(cin, cout, k, out_hw, groups)
        self.bn(cout, out_hw)

    def se(self, c: int, squeeze: int, hw: int) -> None:
        self.row.flops += c * hw * hw  # adaptive_avg_pool2d
        self.conv(c, squeeze, 1, 1, bias=True)
        self.conv(squeeze, c, 1, 1, bias=True)


def _layer(acc: _Acc, op: str, cin: int, cout: int, k: int, stride: int, expand: float, se_ratio: float,
           skip: str, hw_in: int) -> int:
    hw = conv_out(hw_in, stride)
    if op in ("mbconv", "dwconv"):
        mid = expanded_channels(cin, expand)
        if mid != cin:
            acc.conv_bn(cin, mid, 1, hw_in)  # expand
        acc.conv_bn(mid, mid, k, hw, groups=mid)  # depthwise
        if se_ratio > 0:
            acc.se(mid, se_channels(cin, se_ratio), hw)
        acc.conv_bn(mid, cout, 1, hw)  # project
    else:  # conv
        fused = expand != 1
        mid = expanded_channels(cin, expand) if fused else cout
        acc.conv_bn(cin, mid, k, hw)
        if se_ratio > 0:
            acc.se(mid, se_channels(cin, se_ratio), hw)
        if fused:
            acc.conv_bn(mid, cout, 1, hw)
    if skip == "pool" and cin != cout:
        acc.conv_bn(cin, cout, 1, hw)  # shortcut projection (its avg-pool counts 0)
    return hw


def _resolution(r) -> int:
    """A positive integer (numpy integers and integral floats too).  Checked because a negative
    size would square into a plausible-looking count, and int() would silently truncate 224.5."""
    try:
        v = None if isinstance(r, bool) else operator.index(r)
    except TypeError:
        v = int(r) if isinstance(r, float) and r.is_integer() else None
    if v is None or v < 1:
        raise SpecError("resolution", f"must be a positive integer, got {r!r}")
    return v


def cost(spec: Spec, resolution: int | None = None) -> Cost:
    """Params and FLOPs of ``spec`` at ``resolution`` (default: the spec's), with a per-stage breakdown.

    ``spec`` is a :class:`Spec` or anything :func:`nas.load_spec` accepts.
    """
    if not isinstance(spec, Spec):
        from .presets import load_spec
        spec = load_spec(spec)
    res = spec.resolution if resolution is None else _resolution(resolution)
    rows: list[StageCost] = []

    hw = conv_out(res, spec.stem.stride)
    stem = StageCost("stem", "conv", spec.stem.kernel, 1, spec.in_channels, spec.stem.out_channels, res, hw)
    _Acc(stem).conv_bn(spec.in_channels, spec.stem.out_channels, spec.stem.kernel, hw)
    rows.append(stem)

    stage_rows = []
    for i, s in enumerate(spec.stages):
        stage_rows.append(StageCost(f"stages[{i}]", s.op, s.kernel, s.repeats, 0, s.out_channels, 0, 0))
    for p in iter_layers(spec):
        row = stage_rows[p.stage_index]
        s = p.stage
        if p.layer_index == 0:
            row.in_channels, row.in_resolution = p.in_channels, hw
        hw = _layer(_Acc(row), s.op, p.in_channels, s.out_channels, s.kernel, p.stride, s.expand_ratio,
                    s.se_ratio, s.skip, hw)
        row.out_resolution = hw
    rows.extend(stage_rows)

    c_last, c_head = spec.stages[-1].out_channels, spec.head.out_channels
    head = StageCost("head", "conv", 1, 1, c_last, spec.num_classes, hw, 1)
    acc = _Acc(head)
    acc.conv_bn(c_last, c_head, 1, hw)
    head.flops += c_head * hw * hw  # global adaptive_avg_pool2d
    head.params += c_head * spec.num_classes + spec.num_classes  # classifier
    head.flops += c_head * spec.num_classes
    rows.append(head)

    return Cost(params=sum(r.params for r in rows), flops=sum(r.flops for r in rows), resolution=res, stages=rows)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def fvcore_flops(model, resolution: int, in_channels: int = 3) -> int:
    """fvcore's FLOP count of ``model`` (eval mode, batch 1) — the cross-check of :func:`cost`."""
    import warnings

    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                x = torch.zeros(1, in_channels, resolution, resolution)
                analysis = FlopCountAnalysis(model, x)
                analysis.unsupported_ops_warnings(False)
                analysis.uncalled_modules_warnings(False)
                analysis.tracer_warnings("none")
                total = int(analysis.total())
        finally:
            model.train(was_training)
    return total
