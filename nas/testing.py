"""Seeded random *valid* specs, for tests and property checks.

One generator, two front ends:

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
from typing import Any, Callable, Sequence

from .spec import ACTIVATIONS, FORMAT, OPS, SKIPS, VERSION, Spec

__all__ = ["random_spec", "random_spec_dict", "KERNELS", "EXPAND_RATIOS", "SE_RATIOS", "RESOLUTIONS"]

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
        expand = 1 if op == "dwconv" else d.choice(EXPAND_RATIOS)
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
