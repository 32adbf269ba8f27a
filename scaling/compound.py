"""Compound scaling: an explicit step from a fully resolved spec to another.

Rounding follows the reference builder (TF EfficientNet, torchvision):

* widths: :func:`round_filters` — ``c * width`` to the nearest multiple of 8, at
  least 8, bumped up by 8 when rounding lost more than 10 %; stem and head widths
  scale too;
* depths: :func:`round_repeats` — ``ceil(n * depth)`` per stage (timm spreads extra
  repeats differently and gets other parameter counts; we follow the reference);
* resolution: given explicitly (the published table) or ``r * gamma^phi`` on a
  grid of 4 px (1 px for bases under 80 px), the grid point within 5 % whose
  FLOPs come nearest ``(alpha*beta^2*gamma^2)^phi`` times the base's (see
  :func:`compound_scale`; ``resolution_rule="nearest"`` rounds plainly);
* dropout: linear from the base's rate at phi = 0 to 0.5 at phi = 7, capped
  (:func:`scaled_dropout`); drop connect stays the base's.

Why FLOPs only roughly follow ``(alpha*beta^2*gamma^2)^phi``: the ceiling on
repeats adds up to one layer per stage.  With alpha = 1.05 at phi = 1 every
one-layer stage doubles (ceil(1.05) = 2), and FLOPs overshoot by ~40 %; with the
paper's (1.2, 1.1, 1.15) the scaled B0 stays within 0-14 % of the target for
phi = 1..7 (tests/test_scaling.py checks [0.75, 1.25] for several sets).

The published EfficientNet family (B0…B7, L2) is a table, NOT ``alpha^phi,
beta^phi, gamma^phi`` for whole phi: B7 is width 2.0 / depth 3.1 / 600 px, while
phi = 7 with (1.2, 1.1, 1.15) gives 1.95 / 3.58 / 596.  Both are offered, side by
side: :data:`PUBLISHED` and :func:`compound_scale`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from nas.spec import Spec, round_filters

__all__ = [
    "round_filters",
    "round_repeats",
    "round_resolution",
    "scale_spec",
    "Multipliers",
    "compound_multipliers",
    "compound_scale",
    "ScalingError",
    "MAX_PARAMS",
    "scaled_dropout",
    "estimate_params",
    "check_coefficients",
    "default_resolution_divisor",
    "constraint_value",
    "Published",
    "PUBLISHED",
    "published_spec",
    "describe_published",
    "PAPER_COEFFICIENTS",
]

#: EfficientNet's grid-search result at phi = 1 (alpha: depth, beta: width, gamma: resolution).
PAPER_COEFFICIENTS = (1.2, 1.1, 1.15)


def constraint_value(alpha: float, beta: float, gamma: float) -> float:
    """alpha * beta^2 * gamma^2: the FLOPs multiplier per unit of phi (the paper constrains it to about 2)."""
    return alpha * beta ** 2 * gamma ** 2


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


class ScalingError(ValueError):
    """A scaling request that cannot give a usable spec (bad phi or coefficients, too large a network)."""


#: Refuse scaled specs above this many parameters (estimated before anything is
#: built).  EfficientNet-L2 has 480M; 2e9 float32 parameters are 8 GB before
#: gradients and optimizer state, more than a 24 GB machine can train.
MAX_PARAMS = 2_000_000_000

#: Dropout at phi = 0 is the base's; it rises linearly to this at phi = DROPOUT_PHI_MAX
#: and stays there (the published B0..B7 go 0.2 -> 0.5 over phi = 0..7).
DROPOUT_MAX = 0.5
DROPOUT_PHI_MAX = 7.0

#: Resolution search window around r * gamma^phi for the "flops" rule (fraction of it).
RESOLUTION_WINDOW = 0.05

RESOLUTION_RULES = ("flops", "nearest")


def scaled_dropout(base_dropout: float, phi: float) -> float:
    """The dropout schedule: linear from the base's rate at phi = 0 to 0.5 at phi = 7, capped.

    Bigger networks overfit more, so the published family raises dropout with
    size (B0 0.2 ... B7 0.5, in steps of 0.1 every two members).  A base already
    at or above 0.5 keeps its rate.  Drop connect (stochastic depth) is NOT
    scheduled: the reference keeps 0.2 for every member, and so do we (the base's
    rate is kept).
    """
    if base_dropout >= DROPOUT_MAX:
        return base_dropout
    t = min(phi, DROPOUT_PHI_MAX) / DROPOUT_PHI_MAX
    return round(base_dropout + (DROPOUT_MAX - base_dropout) * t, 4)


def default_resolution_divisor(base_resolution: int) -> int:
    """4 px (the published family's sizes are all multiples of 4) from 80 px up, 1 px below.

    Why the switch: a step of the divisor should never be coarser than the
    5 % steps of the gamma grid; at 16 px a 4-px step is 25 %, at 80 px it is 5 %.
    """
    return 4 if base_resolution >= 80 else 1


def check_coefficients(phi: float, alpha: float, beta: float, gamma: float) -> None:
    """Raise :class:`ScalingError` unless phi >= 0 and alpha, beta, gamma >= 1, all finite."""
    for label, v in (("phi", phi), ("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ScalingError(f"{label} must be a number, got {type(v).__name__}")
        if not math.isfinite(v):
            raise ScalingError(f"{label} must be finite, got {v}")
    if phi < 0:
        raise ScalingError(f"phi must be >= 0, got {phi:g}")
    for label, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if v < 1:
            raise ScalingError(f"{label} must be >= 1 (compound scaling only grows a network), got {v:g}")


def _safe_multipliers(phi: float, alpha: float, beta: float, gamma: float) -> Multipliers:
    try:
        m = compound_multipliers(phi, alpha, beta, gamma)
    except OverflowError:
        m = Multipliers(math.inf, math.inf, math.inf)
    # a multiplier of 1e6 already means channels far past any limit; stop before int(inf)
    for label, v in (("depth", m.depth), ("width", m.width), ("resolution", m.resolution)):
        if not math.isfinite(v) or v > 1e6:
            raise ScalingError(f"phi={phi:g} is far too large: the {label} multiplier would be {v:.3g}")
    return m


def estimate_params(base: Spec, *, width: float = 1.0, depth: float = 1.0) -> int:
    """Parameters of ``scale_spec(base, width=, depth=)`` computed without building (or validating) it.

    Exact: a plain sum of the per-layer costs (:mod:`nas.cost`).  Parameters do not
    depend on resolution, and every layer of a stage after the first has the same
    count, so a stage of ``n`` layers costs ``first + (n - 1) * rest`` — cheap even
    for absurd repeat counts.
    """
    from nas.cost import head_cost, layer_cost, stem_cost
    from nas.spec import plan_layers

    stem_channels = round_filters(base.stem.out_channels, width)
    repeats = [round_repeats(s.repeats, depth) for s in base.stages]
    stages = [dataclasses.replace(s, out_channels=round_filters(s.out_channels, width), repeats=min(n, 2))
              for s, n in zip(base.stages, repeats)]
    total = stem_cost(base.in_channels, stem_channels, base.stem.kernel, base.stem.stride, 1).params
    for p in plan_layers(stages, stem_channels, 0.0):
        layer = layer_cost(p.stage, p.in_channels, p.stride, 1).params
        total += layer if p.layer_index == 0 else (repeats[p.stage_index] - 1) * layer
    total += head_cost(stages[-1].out_channels, round_filters(base.head.out_channels, width), base.num_classes,
                       1).params
    return int(total)


def _check_bounds(base: Spec, width: float, depth: float, resolution: int, phi: float) -> None:
    """Clear messages for what Spec validation would refuse (instead of a bare SpecError path)."""
    from nas.spec import MAX_CHANNELS, MAX_REPEATS, MAX_RESOLUTION

    widest = max([round_filters(base.stem.out_channels, width), round_filters(base.head.out_channels, width)]
                 + [round_filters(s.out_channels, width) for s in base.stages])
    if widest > MAX_CHANNELS:
        raise ScalingError(f"phi={phi:g} gives width x{width:.3g}: {widest} channels, above the spec limit {MAX_CHANNELS}")
    deepest = max(round_repeats(s.repeats, depth) for s in base.stages)
    if deepest > MAX_REPEATS:
        raise ScalingError(f"phi={phi:g} gives depth x{depth:.3g}: a stage of {deepest} layers, above the spec limit {MAX_REPEATS}")
    if resolution > MAX_RESOLUTION:
        raise ScalingError(f"phi={phi:g} gives resolution {resolution} px, above the spec limit {MAX_RESOLUTION}")


def _pick_resolution(sized: Spec, base: Spec, target_res: float, target_flops: float, divisor: int, rule: str) -> int:
    """The resolution for a scaled spec (see :func:`compound_scale`)."""
    from nas.cost import cost

    nearest = round_resolution(target_res, divisor)
    if rule == "nearest":
        return nearest
    lo = max(divisor, math.ceil(target_res * (1 - RESOLUTION_WINDOW) / divisor) * divisor)
    hi = math.floor(target_res * (1 + RESOLUTION_WINDOW) / divisor) * divisor
    options = sorted(set(range(lo, hi + 1, divisor)) | {nearest})
    # closest FLOPs to the target; ties go to the resolution nearest r * gamma^phi
    return min(options, key=lambda r: (abs(math.log(cost(sized, r).flops / target_flops)), abs(r - target_res)))


def compound_scale(base: Spec, phi: float, alpha: float = PAPER_COEFFICIENTS[0], beta: float = PAPER_COEFFICIENTS[1],
                   gamma: float = PAPER_COEFFICIENTS[2], *, resolution_divisor: int | None = None,
                   resolution_rule: str = "flops", dropout: float | None = None, name: str | None = None,
                   max_params: float | None = MAX_PARAMS) -> Spec:
    """Scale ``base`` by ``phi`` with coefficients (alpha, beta, gamma); FLOPs grow about (alpha*beta^2*gamma^2)^phi.

    * depth: every stage's repeats ``ceil(n * alpha^phi)`` (:func:`round_repeats`);
    * width: every width, stem and head included, ``round_filters(c, beta^phi)``;
    * resolution: ``r * gamma^phi`` on a grid of ``resolution_divisor`` px
      (default :func:`default_resolution_divisor`: 4 px from 80 px up, else 1).
      Rule ``"nearest"`` takes the nearest grid point.  Rule ``"flops"`` (the
      default) takes, among grid points within 5 % of ``r * gamma^phi``, the one
      whose FLOPs come closest to ``base FLOPs * (alpha*beta^2*gamma^2)^phi``.
      Why: the ceiling on repeats adds up to one layer per stage (B0 at phi = 2
      has 26 layers instead of 16 * 1.44 = 23) and 'same' padding rounds feature
      maps up, so plain rounding overshoots the FLOPs the compound rule promises
      by up to a third at small phi; a resolution nudge of at most 5 % gives it back;
    * dropout: :func:`scaled_dropout` (base rate at phi = 0 -> 0.5 at phi = 7)
      unless ``dropout`` is given; drop connect: the base's (0.2 for B0, as in the reference).

    phi may be fractional; phi = 0 returns the base unchanged except for its name
    and provenance.  Raises :class:`ScalingError` (one line) for phi < 0, a
    coefficient < 1, a non-finite value, a spec beyond the spec limits, or more
    than ``max_params`` parameters (estimated before any spec is built).
    """
    check_coefficients(phi, alpha, beta, gamma)
    if resolution_rule not in RESOLUTION_RULES:
        raise ScalingError(f"resolution_rule must be one of {', '.join(RESOLUTION_RULES)}, got {resolution_rule!r}")
    m = _safe_multipliers(phi, alpha, beta, gamma)
    if max_params is not None:
        n = estimate_params(base, width=m.width, depth=m.depth)
        if n > max_params:
            raise ScalingError(f"phi={phi:g} would give about {n:.3g} parameters ({n * 4 / 2**30:,.0f} GiB in float32), "
                               f"above the limit of {max_params:.3g}")
    divisor = resolution_divisor or default_resolution_divisor(base.resolution)
    target_res = base.resolution * m.resolution
    _check_bounds(base, m.width, m.depth, round_resolution(target_res, divisor), phi)
    ratio = alpha * beta ** 2 * gamma ** 2
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
            "flops_multiplier": ratio ** phi,
            "resolution_rule": resolution_rule,
            "resolution_divisor": divisor,
        }
    }
    label = name if name is not None else f"{base.name or 'spec'}-phi{phi:g}"
    new_dropout = dropout if dropout is not None else scaled_dropout(base.dropout, phi)
    sized = scale_spec(base, width=m.width, depth=m.depth, dropout=new_dropout, name=label, provenance=prov)
    if m.resolution == 1.0:
        res = base.resolution  # phi = 0 (or gamma = 1): keep the base's, even off the divisor grid
    else:
        from nas.cost import cost

        res = _pick_resolution(sized, base, target_res, cost(base).flops * ratio ** phi, divisor, resolution_rule)
    return sized.replace(resolution=res)


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


def describe_published(name: str) -> tuple[Spec, str]:
    """``name``'s published spec (scaled from the ``efficientnet-b0`` preset) and one line about it: its
    multipliers, params and FLOPs, and for B0..B7 what the formula with the paper's coefficients gives instead."""
    from nas.cost import cost
    from nas.presets import load_preset

    base = load_preset("efficientnet-b0")
    spec = published_spec(base, name) if name != "efficientnet-b0" else base
    p = PUBLISHED[name]
    c = cost(spec)
    line = (f"published {name}: width x{p.width:g}, depth x{p.depth:g}, {p.resolution} px, dropout {p.dropout:g}, "
            f"{c.params:,} params, {c.flops:,} FLOPs")
    if name.startswith("efficientnet-b") and name[-1].isdigit():
        phi = int(name[-1])
        m = compound_multipliers(phi, *PAPER_COEFFICIENTS)
        line += (f"; the formula at phi={phi} with the paper's (1.2, 1.1, 1.15) gives width x{m.width:.3g}, "
                 f"depth x{m.depth:.3g}, {base.resolution * m.resolution:.0f} px (the family is a table, not the formula)")
    return spec, line
