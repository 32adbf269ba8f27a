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
from typing import Callable

from .spec import Spec, SpecError, expanded_channels, iter_layers, se_channels

__all__ = ["Cost", "StageCost", "Count", "cost", "conv_out", "LAYER_COSTS", "layer_cost", "stem_cost", "head_cost",
           "conv", "bn", "conv_bn", "squeeze_excite", "fvcore_flops", "count_params"]


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


@dataclass(frozen=True)
class Count:
    """Parameters and FLOPs of one piece of a network; pieces add up."""

    params: int = 0
    flops: int = 0

    def __add__(self, other: "Count") -> "Count":
        return Count(self.params + other.params, self.flops + other.flops)


def conv(cin: int, cout: int, k: int, out_hw: int, groups: int = 1, bias: bool = False) -> Count:
    weights = cout * (cin // groups) * k * k
    return Count(weights + (cout if bias else 0), weights * out_hw * out_hw)


def bn(c: int, hw: int) -> Count:
    return Count(2 * c, 2 * c * hw * hw)


def conv_bn(cin: int, cout: int, k: int, out_hw: int, groups: int = 1) -> Count:
    """:class:`nas.blocks.ConvBNAct` (the activation costs nothing)."""
    return conv(cin, cout, k, out_hw, groups) + bn(cout, out_hw)


def squeeze_excite(c: int, squeeze: int, hw: int) -> Count:
    """:class:`nas.blocks.SqueezeExcite`."""
    pool = Count(0, c * hw * hw)  # adaptive_avg_pool2d
    return pool + conv(c, squeeze, 1, 1, bias=True) + conv(squeeze, c, 1, 1, bias=True)


# ---------------------------------------------------------------- one cost per op
#
# Each function mirrors the module of the same op in nas/blocks.py line by line and
# takes the same keyword arguments (less those that cost nothing), plus ``resolution``
# (the layer's input size).  The shortcut is not an op's: :func:`layer_cost` adds it,
# as nas.blocks._Layer builds it for every op.


def mbconv_cost(*, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                se_ratio: float, resolution: int) -> Count:
    """:class:`nas.blocks.MBConv` (and :class:`~nas.blocks.DepthwiseSeparable`)."""
    hw = conv_out(resolution, stride)
    mid = expanded_channels(in_channels, expand_ratio)
    c = Count()
    if mid != in_channels:
        c += conv_bn(in_channels, mid, 1, resolution)  # expand
    c += conv_bn(mid, mid, kernel, hw, groups=mid)  # depthwise
    if se_ratio > 0:
        c += squeeze_excite(mid, se_channels(in_channels, se_ratio), hw)
    return c + conv_bn(mid, out_channels, 1, hw)  # project


def regular_conv_cost(*, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                      se_ratio: float, resolution: int) -> Count:
    """:class:`nas.blocks.RegularConv`."""
    hw = conv_out(resolution, stride)
    fused = expand_ratio != 1
    mid = expanded_channels(in_channels, expand_ratio) if fused else out_channels
    c = conv_bn(in_channels, mid, kernel, hw)
    if se_ratio > 0:
        c += squeeze_excite(mid, se_channels(in_channels, se_ratio), hw)
    if fused:
        c += conv_bn(mid, out_channels, 1, hw)  # project
    return c


LAYER_COSTS: dict[str, Callable[..., Count]] = {
    "mbconv": mbconv_cost,
    "dwconv": mbconv_cost,
    "conv": regular_conv_cost,
}
"""Op name -> its cost; the keys are those of :data:`nas.blocks.LAYERS` (a test holds them equal)."""


def layer_cost(stage, in_channels: int, stride: int, resolution: int) -> Count:
    """One layer of ``stage`` (a :class:`~nas.spec.Stage`) at input width and size: its op plus its shortcut."""
    c = LAYER_COSTS[stage.op](in_channels=in_channels, out_channels=stage.out_channels, kernel=stage.kernel,
                              stride=stride, expand_ratio=stage.expand_ratio, se_ratio=stage.se_ratio,
                              resolution=resolution)
    if stage.skip == "pool" and in_channels != stage.out_channels:
        # the pooling skip's projection (its avg-pool counts 0)
        c += conv_bn(in_channels, stage.out_channels, 1, conv_out(resolution, stride))
    return c


def stem_cost(in_channels: int, out_channels: int, kernel: int, stride: int, resolution: int) -> Count:
    return conv_bn(in_channels, out_channels, kernel, conv_out(resolution, stride))


def head_cost(in_channels: int, head_channels: int, num_classes: int, resolution: int) -> Count:
    """1x1 conv + BN, global average pool, linear classifier (its bias counts as parameters only)."""
    c = conv_bn(in_channels, head_channels, 1, resolution)
    c += Count(0, head_channels * resolution * resolution)  # global adaptive_avg_pool2d
    return c + Count(head_channels * num_classes + num_classes, head_channels * num_classes)


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

    hw = conv_out(res, spec.stem.stride)
    stem = StageCost("stem", "conv", spec.stem.kernel, 1, spec.in_channels, spec.stem.out_channels, res, hw)
    _add(stem, stem_cost(spec.in_channels, spec.stem.out_channels, spec.stem.kernel, spec.stem.stride, res))
    rows = [stem] + [StageCost(f"stages[{i}]", s.op, s.kernel, s.repeats, 0, s.out_channels, 0, 0)
                     for i, s in enumerate(spec.stages)]
    for p in iter_layers(spec):
        row = rows[1 + p.stage_index]
        if p.layer_index == 0:
            row.in_channels, row.in_resolution = p.in_channels, hw
        _add(row, layer_cost(p.stage, p.in_channels, p.stride, hw))
        hw = row.out_resolution = conv_out(hw, p.stride)

    c_last = spec.stages[-1].out_channels
    head = StageCost("head", "conv", 1, 1, c_last, spec.num_classes, hw, 1)
    _add(head, head_cost(c_last, spec.head.out_channels, spec.num_classes, hw))
    rows.append(head)

    return Cost(params=sum(r.params for r in rows), flops=sum(r.flops for r in rows), resolution=res, stages=rows)


def _add(row: StageCost, c: Count) -> None:
    row.params += c.params
    row.flops += c.flops


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
