"""Compound scaling: an explicit step from a fully resolved spec to another.

Rounding follows the reference builder (TF EfficientNet, torchvision):

* widths: :func:`round_filters` — ``c * width`` to the nearest multiple of 8, at
  least 8, bumped up by 8 when rounding lost more than 10 %; stem and head widths
  scale too;
* depths: :func:`round_repeats` — ``ceil(n * depth)`` per stage (timm spreads extra
  repeats differently and gets other parameter counts; we follow the reference);
* resolution: given explicitly (the published table) or ``round(r * gamma^phi)``
  to a multiple of ``resolution_divisor`` (see :func:`compound_scale`).

The published EfficientNet family (B0…B7, L2) is a table, NOT ``alpha^phi,
beta^phi, gamma^phi`` for whole phi: B7 is width 2.0 / depth 3.1 / 600 px, while
phi = 7 with (1.2, 1.1, 1.15) gives 1.95 / 3.58 / 596.  Both are offered, side by
side: :data:`PUBLISHED` and :func:`compound_scale`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from nas.spec import Spec

__all__ = [
    "round_filters",
    "round_repeats",
    "round_resolution",
    "scale_spec",
    "Multipliers",
    "compound_multipliers",
    "compound_scale",
    "Published",
    "PUBLISHED",
    "published_spec",
    "PAPER_COEFFICIENTS",
]

#: EfficientNet's grid-search result at phi = 1 (alpha: depth, beta: width, gamma: resolution).
PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a width and round it to a multiple of ``divisor`` (never down by more than 10 %)."""
    if width == 1.0:
        return channels
    v = channels * width
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:  # rounding must not remove more than 10 % of the width
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's layer count by ``depth``, rounding up (the reference rule)."""
    return int(math.ceil(repeats * depth))


def round_resolution(resolution: float, divisor: int = 4) -> int:
    """Round a scaled input resolution to the nearest multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(resolution / divisor)) * divisor)


def scale_spec(base: Spec, *, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
               dropout: float | None = None, drop_connect_rate: float | None = None, name: str | None = None,
               provenance: dict | None = None, divisor: int = 8) -> Spec:
    """Scale ``base`` by width and depth multipliers; set resolution and dropout explicitly."""
    d = base.to_dict()
    d["stem"]["out_channels"] = round_filters(base.stem.out_channels, width, divisor)
    for s in d["stages"]:
        s["out_channels"] = round_filters(s["out_channels"], width, divisor)
        s["repeats"] = round_repeats(s["repeats"], depth)
    d["head"]["out_channels"] = round_filters(base.head.out_channels, width, divisor)
    if resolution is not None:
        d["resolution"] = int(resolution)
    if dropout is not None:
        d["dropout"] = dropout
    if drop_connect_rate is not None:
        d["drop_connect_rate"] = drop_connect_rate
    d["name"] = name if name is not None else base.name
    d["provenance"] = provenance if provenance is not None else {}
    return Spec.from_dict(d)


@dataclass(frozen=True)
class Multipliers:
    depth: float
    width: float
    resolution: float


def compound_multipliers(phi: float, alpha: float, beta: float, gamma: float) -> Multipliers:
    """depth = alpha^phi, width = beta^phi, resolution = gamma^phi."""
    return Multipliers(depth=alpha ** phi, width=beta ** phi, resolution=gamma ** phi)


def compound_scale(base: Spec, phi: float, alpha: float = PAPER_COEFFICIENTS[0], beta: float = PAPER_COEFFICIENTS[1],
                   gamma: float = PAPER_COEFFICIENTS[2], *, resolution_divisor: int = 4,
                   dropout: float | None = None, name: str | None = None) -> Spec:
    """Scale ``base`` by ``phi`` with coefficients (alpha, beta, gamma); FLOPs grow about (alpha*beta^2*gamma^2)^phi."""
    m = compound_multipliers(phi, alpha, beta, gamma)
    res = round_resolution(base.resolution * m.resolution, resolution_divisor)
    prov = {
        "scaling": {
            "base": base.name,
            "base_fingerprint": base.fingerprint(),
            "phi": phi,
            "alpha": alpha,
            "beta": beta,
            "gamma": gamma,
            "depth_multiplier": m.depth,
            "width_multiplier": m.width,
            "resolution_multiplier": m.resolution,
        }
    }
    return scale_spec(base, width=m.width, depth=m.depth, resolution=res, dropout=dropout,
                      name=name if name is not None else f"{base.name or 'spec'}-phi{phi:g}", provenance=prov)


@dataclass(frozen=True)
class Published:
    width: float
    depth: float
    resolution: int
    dropout: float


#: The published EfficientNet family (width, depth, resolution, dropout).
PUBLISHED: dict[str, Published] = {
    "efficientnet-b0": Published(1.0, 1.0, 224, 0.2),
    "efficientnet-b1": Published(1.0, 1.1, 240, 0.2),
    "efficientnet-b2": Published(1.1, 1.2, 260, 0.3),
    "efficientnet-b3": Published(1.2, 1.4, 300, 0.3),
    "efficientnet-b4": Published(1.4, 1.8, 380, 0.4),
    "efficientnet-b5": Published(1.6, 2.2, 456, 0.4),
    "efficientnet-b6": Published(1.8, 2.6, 528, 0.5),
    "efficientnet-b7": Published(2.0, 3.1, 600, 0.5),
    "efficientnet-l2": Published(4.3, 5.3, 800, 0.5),
}


def published_spec(base: Spec, name: str) -> Spec:
    """A member of the published family, scaled from the B0 base with the reference rounding."""
    p = PUBLISHED[name]
    prov = {"preset": name, "scaling": {"base": base.name, "source": "published table (EfficientNet, Tan & Le 2019)",
                                        "width_multiplier": p.width, "depth_multiplier": p.depth}}
    return scale_spec(base, width=p.width, depth=p.depth, resolution=p.resolution, dropout=p.dropout,
                      name=name, provenance=prov)
