"""The MnasNet factorized hierarchical search space (Tan et al. 2019, arXiv 1807.11626, Sec. 4.1).

A *skeleton* spec fixes the number of stages, their strides, the stem, the head
and the training-time settings (activation, dropout, drop connect, BN).  Each of
its stages then gets its own, independent choices (that is what "factorized
hierarchical" means: layers differ between stages, not within one)::

    op       conv | dwconv | mbconv3 | mbconv6   (regular conv, depthwise-separable,
                                                  MBConv with expand 3 or 6)
    kernel   3 | 5
    se       0 | 0.25                            (squeeze-and-excitation ratio)
    skip     pool | identity | none
    filters  0.75 | 1.0 | 1.25                   (x the skeleton's width, rounded to /8)
    layers   -1 | 0 | +1                         (added to the skeleton's repeats, >= 1)

The space is *data*: :meth:`MnasNetSpace.distributions` maps the trial parameter
names (``s1_op`` ... ``s7_layers``) to Optuna ``CategoricalDistribution`` objects,
which every sampler consumes as is.  :meth:`decode` turns a choice dict into a
:class:`nas.spec.Spec`, :meth:`encode` goes back.  The skeleton is itself a
member: ``decode(encode(skeleton)) == skeleton`` (for ``mnasnet-b0`` that is the
``efficientnet-b0`` preset, whose stage 1 is a ``dwconv``).

Two choice vectors can decode to the same spec (e.g. 16 x 0.75 rounds back to
16); :attr:`size` counts choice vectors, as the paper does.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

from nas.presets import load_preset
from nas.spec import Spec, Stage, round_filters

__all__ = ["CHOICES", "MnasNetSpace", "ChoiceError"]

# Per-stage choice lists; the order is the order of the categorical distribution.
CHOICES: dict[str, tuple] = {
    "op": ("conv", "dwconv", "mbconv3", "mbconv6"),
    "kernel": (3, 5),
    "se": (0.0, 0.25),
    "skip": ("pool", "identity", "none"),
    "filters": (0.75, 1.0, 1.25),
    "layers": (-1, 0, 1),
}

# op choice -> (spec op, expand ratio)
_OPS = {"conv": ("conv", 1), "dwconv": ("dwconv", 1), "mbconv3": ("mbconv", 3), "mbconv6": ("mbconv", 6)}
_OPS_INV = {v: k for k, v in _OPS.items()}


class ChoiceError(ValueError):
    """A choice dict (or a spec to encode) is not a member of the space."""


def check_names(space: str, param_names, choices: Mapping[str, Any]) -> None:
    """:class:`ChoiceError` unless ``choices`` has exactly the space's parameter names (every space's first check)."""
    missing = [n for n in param_names if n not in choices]
    extra = [n for n in choices if n not in param_names]
    if missing or extra:
        raise ChoiceError(f"choices do not match space {space}: missing {missing}, unknown {extra}")



@dataclass(frozen=True)
class MnasNetSpace:
    """The factorized space over the stages of ``skeleton`` (a preset name)."""

    name: str
    skeleton: str

    @cached_property
    def base(self) -> Spec:
        return load_preset(self.skeleton)

    @property
    def n_stages(self) -> int:
        return len(self.base.stages)

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"s{i + 1}_{key}" for i in range(self.n_stages) for key in CHOICES)

    def distributions(self) -> dict[str, Any]:
        """Trial parameter name -> ``optuna.distributions.CategoricalDistribution``."""
        from optuna.distributions import CategoricalDistribution  # optuna is light, but keep decode torch/optuna-free

        return {n: CategoricalDistribution(CHOICES[n.split("_", 1)[1]]) for n in self.param_names}

    @property
    def size(self) -> int:
        """Number of distinct choice vectors: (4*2*2*3*3*3)^stages."""
        per_stage = math.prod(len(v) for v in CHOICES.values())
        return per_stage ** self.n_stages

    # ------------------------------------------------------------ choices <-> spec

    def check(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a choice dict; returns it as a plain dict in parameter order."""
        check_names(self.name, self.param_names, choices)
        out = {}
        for n in self.param_names:
            v = choices[n]
            allowed = CHOICES[n.split("_", 1)[1]]
            if v not in allowed or isinstance(v, bool):
                raise ChoiceError(f"{n}: must be one of {list(allowed)}, got {v!r}")
            out[n] = allowed[allowed.index(v)]  # canonical type (0 -> 0.0 for se)
        return out

    def decode(self, choices: Mapping[str, Any]) -> Spec:
        """Choice dict -> spec on the skeleton (stem, strides, head, resolution, classes, BN kept)."""
        c = self.check(choices)
        stages = []
        for i, st in enumerate(self.base.stages):
            p = f"s{i + 1}_"
            op, expand = _OPS[c[p + "op"]]
            stages.append(Stage(op=op, kernel=c[p + "kernel"], stride=st.stride, expand_ratio=expand,
                                se_ratio=float(c[p + "se"]), skip=c[p + "skip"],
                                out_channels=round_filters(st.out_channels, c[p + "filters"]),
                                repeats=max(1, st.repeats + c[p + "layers"]),
                                activation=st.activation, se_activation=st.se_activation))
        return self.base.replace(stages=tuple(stages), name=f"{self.name}-candidate",
                                 provenance={"space": self.name})

    def encode(self, spec: Spec) -> dict[str, Any]:
        """Spec -> choice dict; :class:`ChoiceError` if the spec is not in the space.

        Where several filter multipliers round to the same width, the one nearest
        1.0 is taken (so the skeleton encodes to all-1.0 / all-0).
        """
        base = self.base
        if len(spec.stages) != len(base.stages):
            raise ChoiceError(f"spec has {len(spec.stages)} stages, space {self.name} has {len(base.stages)}")
        if spec.replace(stages=base.stages) != base:
            raise ChoiceError(f"spec differs from the {self.skeleton} skeleton outside the searched stage fields")
        out: dict[str, Any] = {}
        for i, (st, b) in enumerate(zip(spec.stages, base.stages)):
            p = f"s{i + 1}_"
            where = f"stages[{i}]"
            if st.stride != b.stride or st.activation != b.activation or st.se_activation != b.se_activation:
                raise ChoiceError(f"{where}: stride/activation differ from the skeleton")
            op = _OPS_INV.get((st.op, int(st.expand_ratio)) if float(st.expand_ratio).is_integer() else None)
            if op is None:
                raise ChoiceError(f"{where}: op {st.op} with expand {st.expand_ratio} is not a choice")
            if st.kernel not in CHOICES["kernel"] or st.se_ratio not in CHOICES["se"]:
                raise ChoiceError(f"{where}: kernel {st.kernel} / se {st.se_ratio} is not a choice")
            mults = [m for m in sorted(CHOICES["filters"], key=lambda m: abs(m - 1.0))
                     if round_filters(b.out_channels, m) == st.out_channels]
            if not mults:
                raise ChoiceError(f"{where}: {st.out_channels} channels is not a filter choice for {b.out_channels}")
            deltas = [d for d in sorted(CHOICES["layers"], key=abs) if max(1, b.repeats + d) == st.repeats]
            if not deltas:
                raise ChoiceError(f"{where}: {st.repeats} repeats is not a layer choice for {b.repeats}")
            out.update({p + "op": op, p + "kernel": st.kernel, p + "se": float(st.se_ratio), p + "skip": st.skip,
                        p + "filters": mults[0], p + "layers": deltas[0]})
        return out

    # ------------------------------------------------------------ sampling and moves

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """A uniformly random choice dict."""
        return {n: rng.choice(CHOICES[n.split("_", 1)[1]]) for n in self.param_names}

    def neighbours(self, choices: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every choice dict that differs from ``choices`` in exactly one parameter."""
        c = self.check(choices)
        out = []
        for n in self.param_names:
            for v in CHOICES[n.split("_", 1)[1]]:
                if v != c[n]:
                    out.append({**c, n: v})
        return out

    def mutate(self, choices: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
        """One random neighbour (one parameter changed to another of its values)."""
        c = self.check(choices)
        n = rng.choice(self.param_names)
        values = [v for v in CHOICES[n.split("_", 1)[1]] if v != c[n]]
        return {**c, n: rng.choice(values)}
