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

A second, named convention is counted beside it (:data:`FLOP_CONVENTIONS`):
``conv-linear``, the multiply-adds of convolutions and linear layers only (no batch
norm, pooling or activation): ``Cost.conv_linear_flops``, or ``Cost.flops_in(name)``.
It is NAS-Bench-Macro's ``flops`` (``search_spaces/nas_bench_macro.py``), exact for
all 6,561 of its members.  Each op's cost is its entry in :data:`nas.ops.OPS`.
"""
from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import Callable

from .ops import OPS, Count, conv, conv_bn, conv_out, linear, pool, squeeze_excite
from .ops import bn  # noqa: F401  (re-exported: the counting primitives live with the op registry)
from .spec import Spec, SpecError, expanded_channels, iter_layers, se_channels

__all__ = ["Cost", "StageCost", "Count", "cost", "conv_out", "LAYER_COSTS", "layer_cost", "stem_cost", "head_cost",
           "conv", "bn", "conv_bn", "squeeze_excite", "fvcore_flops", "count_params", "FLOP_CONVENTIONS"]

#: The FLOP conventions the cost model counts, by name: ``fvcore`` (the default, and what
#: ``Cost.flops`` holds) and ``conv-linear`` (multiply-adds of convolutions and linear
#: layers only, ``Cost.conv_linear_flops``: NAS-Bench-Macro's ``flops`` and many papers').
FLOP_CONVENTIONS = ("fvcore", "conv-linear")


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
    conv_linear_flops: int = 0


@dataclass
class Cost:
    params: int
    flops: int
    resolution: int
    stages: list[StageCost] = field(default_factory=list)
    conv_linear_flops: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def flops_in(self, convention: str) -> int:
        """The FLOPs in one of :data:`FLOP_CONVENTIONS`."""
        if convention == "fvcore":
            return self.flops
        if convention == "conv-linear":
            return self.conv_linear_flops
        raise ValueError(f"unknown FLOP convention {convention!r}; conventions: {', '.join(FLOP_CONVENTIONS)}")


LAYER_COSTS: dict[str, Callable[..., Count]] = {name: op.cost for name, op in OPS.items()}
"""Op name -> its cost (:data:`nas.ops.OPS`); the keys are those of :data:`nas.blocks.LAYERS`
(a test holds them equal)."""


def layer_cost(stage, in_channels: int, stride: int, resolution: int) -> Count:
    """One layer of ``stage`` (a :class:`~nas.spec.Stage`) at input width and size: its op plus its shortcut."""
    c = OPS[stage.op].cost(in_channels=in_channels, out_channels=stage.out_channels, kernel=stage.kernel,
                           stride=stride, expand_ratio=stage.expand_ratio,
                           expanded=expanded_channels(in_channels, stage.expand_ratio),
                           squeeze=se_channels(in_channels, stage.se_ratio) if stage.se_ratio > 0 else 0,
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
    c += pool(head_channels, resolution)  # global adaptive_avg_pool2d
    return c + linear(head_channels, num_classes)


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

    return Cost(params=sum(r.params for r in rows), flops=sum(r.flops for r in rows), resolution=res, stages=rows,
                conv_linear_flops=sum(r.conv_linear_flops for r in rows))


def _add(row: StageCost, c: Count) -> None:
    row.params += c.params
    row.flops += c.flops
    row.conv_linear_flops += c.conv_linear_flops


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
