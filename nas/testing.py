"""Seeded random *valid* specs, for tests and property checks.

:func:`small_spec` is the one fixed small spec the tests share (a three-stage net
that builds, runs and trains in milliseconds), with keyword arguments for what a
test varies.  For random specs, one generator, two front ends:

* :func:`random_spec` draws from a :class:`random.Random` (fast, reproducible by
  seed; what parity sweeps such as "analytic FLOPs == fvcore on 200 specs" use);
* :func:`specs` is a `hypothesis <https://hypothesis.works>`_ strategy that draws
  the *same* choices through ``draw``, so failing examples shrink field by field
  (fewer stages, smaller kernels, no SE, ...) instead of by an opaque seed.  It is
  only defined when hypothesis is importable.

The generator aims at coverage, not realism: every op, kernel 1/3/5/7, stride
1/2, expansion ratios including 1 and fractional ones (1.5, 2.5), SE ratios in
[0, 0.5], every skip (including ``pool`` across width changes and strides), every
activation, 1/3/4 input channels, odd and tiny resolutions (1, 2, 3, 17, 33, ...),
stem stride 1 or 2.  With ``small=True`` (the default) widths, depths and
resolutions stay small so a model builds and runs in milliseconds.

Every spec goes through :meth:`nas.spec.Spec.from_dict`, so whatever this
returns is valid by construction (or the generator has a bug that a test catches).

>>> import random
>>> s = random_spec(random.Random(0))
>>> s == random_spec(random.Random(0))
True
"""
from __future__ import annotations

import random
from typing import Any, Callable, Mapping, Sequence

from .ops import OPS as OP_REGISTRY
from .spec import ACTIVATIONS, FORMAT, OPS, SKIPS, VERSION, Spec

__all__ = ["small_spec", "random_spec", "random_spec_dict", "conv_linear_macs", "KERNELS", "EXPAND_RATIOS",
           "SE_RATIOS", "RESOLUTIONS"]

KERNELS = (1, 3, 5, 7)
STRIDES = (1, 2)
#: integral and fractional; 1 means "no expand conv" for mbconv.
EXPAND_RATIOS = (1, 1.5, 2, 2.5, 3, 4, 6)
SE_RATIOS = (0.0, 0.0, 0.125, 0.25, 0.3, 0.5)  # 0 twice: about a third of stages without SE
IN_CHANNELS = (1, 3, 4)
#: odd, even, powers of two and tiny ones (a 1x1 input still has to work).
RESOLUTIONS = (1, 2, 3, 5, 7, 8, 16, 17, 24, 31, 32, 33, 48, 63, 64)


class _Draw:
    """The choices the generator makes, over some source of randomness."""

    def choice(self, options: Sequence[Any]) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def integer(self, lo: int, hi: int) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def boolean(self, p_true: float) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class _RandomDraw(_Draw):
    def __init__(self, rng: random.Random):
        self.rng = rng

    def choice(self, options):
        return self.rng.choice(list(options))

    def integer(self, lo, hi):
        return self.rng.randint(lo, hi)

    def boolean(self, p_true):
        return self.rng.random() < p_true


def _generate(d: _Draw, *, max_resolution: int, small: bool) -> dict:
    """The spec document; ``d`` makes every random choice."""
    res_options = [r for r in RESOLUTIONS if r <= max_resolution] or [max_resolution]
    if d.boolean(0.7):
        resolution = d.choice(res_options)
    else:
        resolution = d.integer(1, max_resolution)

    max_ch = 24 if small else 256
    max_stages = 4 if small else 8
    max_repeats = 3 if small else 6
    act = d.choice(ACTIVATIONS)
    stem_out = d.integer(1, 16 if small else 64)
    stages = []
    width = stem_out
    for _ in range(d.integer(1, max_stages)):
        op = d.choice(OPS)
        fixed = OP_REGISTRY[op].fixed  # the fields the op pins (dwconv: expand 1) are not drawn
        expand = fixed["expand_ratio"] if "expand_ratio" in fixed else d.choice(EXPAND_RATIOS)
        # Keeping the width on some stages makes identity skips actually add a branch
        # (and pool skips take their no-projection path).
        out = width if d.boolean(0.3) else d.integer(1, max_ch)
        stages.append({
            "op": op,
            "kernel": d.choice(KERNELS),
            "stride": d.choice(STRIDES),
            "expand_ratio": expand,
            "se_ratio": d.choice(SE_RATIOS),
            "skip": d.choice(SKIPS),
            "out_channels": out,
            "repeats": d.integer(1, max_repeats),
            "activation": d.choice(ACTIVATIONS),
            "se_activation": d.choice(ACTIVATIONS),
            **{k: v for k, v in fixed.items() if k != "expand_ratio"},
        })
        width = out
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": "random",
        "in_channels": d.choice(IN_CHANNELS),
        "resolution": resolution,
        "num_classes": d.choice((1, 2, 7, 10) if small else (1, 10, 100, 1000)),
        "activation": act,
        "stem": {"out_channels": stem_out, "kernel": d.choice(KERNELS), "stride": d.choice(STRIDES)},
        "stages": stages,
        "head": {"out_channels": d.integer(1, 32 if small else 1280)},
        "dropout": d.choice((0.0, 0.2, 0.5)),
        "drop_connect_rate": d.choice((0.0, 0.1, 0.3)),
        "bn": {"eps": d.choice((1e-3, 1e-5)), "momentum": d.choice((0.01, 0.1, 0.0003))},
        "provenance": {"generator": "nas.testing.random_spec"},
    }


def random_spec_dict(rng: random.Random, *, max_resolution: int = 64, small: bool = True) -> dict:
    """The JSON document of :func:`random_spec` (not validated), e.g. to corrupt it in tests."""
    if not 1 <= max_resolution:
        raise ValueError(f"max_resolution must be >= 1, got {max_resolution}")
    return _generate(_RandomDraw(rng), max_resolution=max_resolution, small=small)


def random_spec(rng: random.Random, *, max_resolution: int = 64, small: bool = True) -> Spec:
    """A random valid spec; the same ``rng`` state gives the same spec."""
    return Spec.from_dict(random_spec_dict(rng, max_resolution=max_resolution, small=small))


def small_spec(*, op: str = "mbconv", activation: str = "swish", skip: str = "identity", se_ratio: float = 0.25,
               expand_ratio: float | None = None, stages: Sequence[Mapping[str, Any]] | None = None,
               in_channels: int = 3, resolution: int = 16, num_classes: int = 1000, stem_stride: int = 2,
               head_channels: int = 32, dropout: float = 0.1, drop_connect_rate: float = 0.1,
               name: str = "small") -> Spec:
    """A fixed three-stage spec that builds, runs and trains in milliseconds.

    Stem 3x3 to 8 channels with stride ``stem_stride``; then 8 channels at stride 1
    (once), 16 at stride 2 (twice, so one layer has an identity-shaped shortcut) and
    24 with kernel 5 at stride 2 (once); head 1x1 to ``head_channels``.  Every layer
    is ``op`` with ``activation`` (also inside SE), ``skip`` and ``se_ratio``;
    ``expand_ratio`` defaults to 1 for ``dwconv`` (it must be) and 3 otherwise.
    ``stages`` overrides fields stage by stage: one mapping per stage, e.g.
    ``[{"op": "dwconv", "expand_ratio": 1}, {}, {"se_ratio": 0.0}]``.

    >>> [(s.out_channels, s.stride, s.repeats) for s in small_spec().stages]
    [(8, 1, 1), (16, 2, 2), (24, 2, 1)]
    """
    expand = expand_ratio if expand_ratio is not None else (OP_REGISTRY[op].fixed.get("expand_ratio", 3)
                                                              if op in OP_REGISTRY else 3)
    layer = dict(op=op, kernel=3, stride=1, expand_ratio=expand, se_ratio=se_ratio, skip=skip, out_channels=8,
                 repeats=1, activation=activation, se_activation=activation)
    base = [layer, dict(layer, stride=2, out_channels=16, repeats=2), dict(layer, kernel=5, stride=2, out_channels=24)]
    overrides = list(stages) if stages is not None else [{}] * len(base)
    if len(overrides) != len(base):
        raise ValueError(f"stages: one mapping per stage ({len(base)}), got {len(overrides)}")
    return Spec.from_dict({
        "format": FORMAT, "version": VERSION, "name": name, "in_channels": in_channels, "resolution": resolution,
        "num_classes": num_classes, "activation": activation,
        "stem": {"out_channels": 8, "kernel": 3, "stride": stem_stride},
        "stages": [dict(b, **o) for b, o in zip(base, overrides)],
        "head": {"out_channels": head_channels}, "dropout": dropout, "drop_connect_rate": drop_connect_rate,
        "bn": {"eps": 1e-3, "momentum": 0.01}})


def conv_linear_macs(model, resolution: int, in_channels: int = 3) -> int:
    """Multiply-adds of ``model``'s convolutions and linear layers at batch 1, counted from the shapes a
    forward pass sees (an independent check of the cost model's ``conv-linear`` convention)."""
    import torch

    total = 0

    def hook(m, inputs, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total


try:  # hypothesis is a test dependency, not a runtime one
    from hypothesis import strategies as _st
except ImportError:  # pragma: no cover
    _st = None

if _st is not None:
    __all__.append("specs")

    class _HypothesisDraw(_Draw):
        def __init__(self, draw: Callable):
            self.draw = draw

        def choice(self, options):
            return self.draw(_st.sampled_from(list(options)))

        def integer(self, lo, hi):
            return self.draw(_st.integers(lo, hi))

        def boolean(self, p_true):
            # hypothesis shrinks booleans towards False; p_true only matters for random_spec.
            return self.draw(_st.booleans())

    def specs(*, max_resolution: int = 64, small: bool = True):
        """A hypothesis strategy of valid specs (same space as :func:`random_spec`), shrinking per field."""

        @_st.composite
        def _specs(draw):
            return Spec.from_dict(_generate(_HypothesisDraw(draw), max_resolution=max_resolution, small=small))

        return _specs()
