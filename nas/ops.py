"""The op registry: every op a spec's stage may use, each declared once, in one :class:`OpDef`.

An op's entry holds what the rest of the toolkit needs to know about it:

* ``name``: the spec's ``op`` value;
* ``module``: the name of its ``nn.Module`` in :mod:`nas.blocks` (registered there in
  ``LAYERS`` under the op's name; that file is torch code that exported models embed
  verbatim, so the module itself lives there and a test holds the two tables equal);
* ``cost``: its analytic parameters and FLOPs, a function here that mirrors the module
  line by line (:func:`nas.cost.layer_cost` adds the shortcut every op shares);
* ``fixed``: the spec fields the op pins, e.g. ``{"expand_ratio": 1}`` for ``dwconv``
  (:mod:`nas.spec` refuses other values, naming the field; the JSON Schema's rules
  and the random spec generator follow it);
* ``description``: one sentence for the JSON Schema and the docs.

:mod:`nas.spec` takes its op vocabulary and per-op rules from :data:`OPS`,
:mod:`nas.cost` its per-op costs, :func:`nas.schema.schema` the op enum, its
descriptions and rules; ``tests/test_ops.py`` sweeps every entry (module parameters
and fvcore FLOPs equal to the cost, in every variant).  So adding an op is its
module (and ``LAYERS`` line) in ``nas/blocks.py`` and its :class:`OpDef` here, plus
its tests: two files.  ``tests/test_ops.py`` does exactly that to a copy of the
package and exports a model that uses the new op.

This module sits at the bottom with :mod:`nas.spec` and imports nothing from the
toolkit: an op's cost gets its layer's widths already resolved by the spec's width
rules (``expanded``: :func:`nas.spec.expanded_channels`, ``squeeze``:
:func:`nas.spec.se_channels`, 0 without SE).

Two FLOP conventions are counted side by side (:class:`Count`): ``flops``, fvcore's
(one multiply-add per flop; conv, linear, batch norm, adaptive pooling; the toolkit's
default, see :mod:`nas.cost`), and ``conv_linear_flops``, the multiply-adds of the
convolutions and linear layers only (the convention of many papers' "FLOPs" and of
NAS-Bench-Macro's table).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["OpDef", "OPS", "Count", "conv_out", "conv", "linear", "bn", "conv_bn", "squeeze_excite", "pool"]


# ---------------------------------------------------------------- counting


@dataclass(frozen=True)
class Count:
    """Parameters and FLOPs (both conventions) of one piece of a network; pieces add up."""

    params: int = 0
    flops: int = 0  # fvcore's convention
    conv_linear_flops: int = 0  # convolutions and linear layers only

    def __add__(self, other: "Count") -> "Count":
        return Count(self.params + other.params, self.flops + other.flops,
                     self.conv_linear_flops + other.conv_linear_flops)


def conv_out(size: int, stride: int) -> int:
    """Output size of a 'same'-padded conv with an odd kernel (and of the ceil-mode skip pool)."""
    return (size - 1) // stride + 1


def conv(cin: int, cout: int, k: int, out_hw: int, groups: int = 1, bias: bool = False) -> Count:
    weights = cout * (cin // groups) * k * k
    macs = weights * out_hw * out_hw
    return Count(weights + (cout if bias else 0), macs, macs)


def linear(cin: int, cout: int) -> Count:
    """``nn.Linear`` with bias (the bias counts as parameters only)."""
    return Count(cin * cout + cout, cin * cout, cin * cout)


def bn(c: int, hw: int) -> Count:
    """Batch norm at inference: 2 fvcore flops per element (scale and shift), no multiply-add of a conv."""
    return Count(2 * c, 2 * c * hw * hw, 0)


def pool(c: int, hw: int) -> Count:
    """Adaptive average pooling of a ``c`` x ``hw`` x ``hw`` map: 1 fvcore flop per input element."""
    return Count(0, c * hw * hw, 0)


def conv_bn(cin: int, cout: int, k: int, out_hw: int, groups: int = 1) -> Count:
    """:class:`nas.blocks.ConvBNAct` (the activation costs nothing)."""
    return conv(cin, cout, k, out_hw, groups) + bn(cout, out_hw)


def squeeze_excite(c: int, squeeze: int, hw: int) -> Count:
    """:class:`nas.blocks.SqueezeExcite`."""
    return pool(c, hw) + conv(c, squeeze, 1, 1, bias=True) + conv(squeeze, c, 1, 1, bias=True)


# ---------------------------------------------------------------- one cost per op
#
# Each takes the same keywords: the layer's input width and size (``resolution``), its
# output width, kernel, stride and expand ratio, and its widths as the spec's rules
# resolve them: ``expanded`` (input width x expand ratio, rounded) and ``squeeze`` (the
# SE width; 0 without SE).


def mbconv_cost(*, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                expanded: int, squeeze: int, resolution: int) -> Count:
    """:class:`nas.blocks.MBConv` (and :class:`~nas.blocks.DepthwiseSeparable`)."""
    hw = conv_out(resolution, stride)
    mid = expanded
    c = Count()
    if mid != in_channels:
        c += conv_bn(in_channels, mid, 1, resolution)  # expand
    c += conv_bn(mid, mid, kernel, hw, groups=mid)  # depthwise
    if squeeze:
        c += squeeze_excite(mid, squeeze, hw)
    return c + conv_bn(mid, out_channels, 1, hw)  # project


def regular_conv_cost(*, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                      expanded: int, squeeze: int, resolution: int) -> Count:
    """:class:`nas.blocks.RegularConv`."""
    hw = conv_out(resolution, stride)
    fused = expand_ratio != 1
    mid = expanded if fused else out_channels
    c = conv_bn(in_channels, mid, kernel, hw)
    if squeeze:
        c += squeeze_excite(mid, squeeze, hw)
    if fused:
        c += conv_bn(mid, out_channels, 1, hw)  # project
    return c


def identity_cost(*, in_channels: int, out_channels: int, kernel: int, stride: int, expand_ratio: float,
                  expanded: int, squeeze: int, resolution: int) -> Count:
    """:class:`nas.blocks.ProjectingIdentity`: nothing, or a 1x1 conv (stride, no bias) + BN."""
    if stride == 1 and in_channels == out_channels:
        return Count()
    return conv_bn(in_channels, out_channels, 1, conv_out(resolution, stride))


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class OpDef:
    """One op: its name, its module in :mod:`nas.blocks`, its cost, the fields it pins, a description."""

    name: str
    module: str  # the class name in nas/blocks.py (LAYERS[name])
    cost: Callable[..., Count]  # keywords: see "one cost per op" above
    description: str
    fixed: Mapping[str, Any] = field(default_factory=dict)  # spec field -> the only value allowed


def _registry(*defs: OpDef) -> dict[str, OpDef]:
    return {d.name: d for d in defs}


OPS: dict[str, OpDef] = _registry(
    OpDef("mbconv", "MBConv", mbconv_cost,
          "1x1 expand (when the expanded width differs from the input), kxk depthwise, SE, 1x1 linear projection."),
    OpDef("dwconv", "DepthwiseSeparable", mbconv_cost,
          "depthwise-separable (kxk depthwise, SE, 1x1 projection).", fixed={"expand_ratio": 1}),
    OpDef("conv", "RegularConv", regular_conv_cost,
          "a regular kxk conv (then SE); with expand_ratio > 1 it widens and a 1x1 projection follows "
          "(Fused-MBConv)."),
    OpDef("identity", "ProjectingIdentity", identity_cost,
          "the input unchanged when the layer keeps stride 1 and width, else a 1x1 conv (the layer's stride, "
          "no bias) + BN to the output width (NAS-Bench-Macro's identity); no other shortcut.",
          fixed={"kernel": 1, "expand_ratio": 1, "se_ratio": 0, "skip": "none"}),
)
"""Op name -> its :class:`OpDef`, in the spec vocabulary's order."""
