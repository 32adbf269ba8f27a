"""The NAS-Bench-Macro space (Su et al., CVPR 2021): 8 layers, each identity / MBConv 3x3 e3 / MBConv 5x5 e6.

Its 6,561 members are specs (:func:`nas.benchmarks.nas_bench_macro.spec_for_key`): the
benchmark's own macro-structure (32-channel ReLU stem, stages of 2/3/3 layers whose
first layer halves the size and doubles the width, a 1280-wide head, CIFAR 32x32, 10
classes).  The trial parameters are ``layer1`` ... ``layer8``, each a categorical over
``identity``, ``mb3_k3``, ``mb6_k5`` (digit 0, 1, 2 of the benchmark's 8-digit key, in
that order), so a sampler sees exactly the benchmark's raw encoding: 8 categorical
parameters of 3 values.  :meth:`NasBenchMacroSpace.key` and :meth:`from_key` go
between choices and keys; ``decode``/``encode`` between choices and specs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Mapping

from nas.benchmarks import nas_bench_macro as bench
from nas.spec import Spec

from .mnasnet import ChoiceError, check_names

__all__ = ["NasBenchMacroSpace", "LAYER_CHOICES"]

LAYER_CHOICES = bench.CHOICES  # ("identity", "mb3_k3", "mb6_k5"): digit 0, 1, 2


@dataclass(frozen=True)
class NasBenchMacroSpace:
    """The benchmark's 3^8 members; ``name`` is the registry's (``nas-bench-macro``)."""

    name: str = bench.NAME

    @cached_property
    def base(self) -> Spec:
        """The largest member (every layer mb6_k5)."""
        return bench.skeleton()

    @property
    def n_stages(self) -> int:
        return bench.N_LAYERS

    @cached_property
    def param_names(self) -> tuple[str, ...]:
        return tuple(f"layer{i + 1}" for i in range(bench.N_LAYERS))

    def distributions(self) -> dict[str, Any]:
        """Trial parameter name -> ``optuna.distributions.CategoricalDistribution``."""
        from optuna.distributions import CategoricalDistribution

        return {n: CategoricalDistribution(LAYER_CHOICES) for n in self.param_names}

    @property
    def size(self) -> int:
        return len(LAYER_CHOICES) ** bench.N_LAYERS

    # ------------------------------------------------------------ choices <-> key <-> spec

    def check(self, choices: Mapping[str, Any]) -> dict[str, Any]:
        check_names(self.name, self.param_names, choices)
        out = {}
        for n in self.param_names:
            if not isinstance(choices[n], str) or choices[n] not in LAYER_CHOICES:
                raise ChoiceError(f"{n}: must be one of {list(LAYER_CHOICES)}, got {choices[n]!r}")
            out[n] = choices[n]
        return out

    def key(self, choices: Mapping[str, Any]) -> str:
        """The benchmark's 8-digit key of a choice dict."""
        c = self.check(choices)
        return "".join(str(LAYER_CHOICES.index(c[n])) for n in self.param_names)

    def from_key(self, key: str) -> dict[str, Any]:
        """The choice dict of an 8-digit key."""
        try:
            bench.check_key(key)
        except bench.NotAMember as e:
            raise ChoiceError(str(e)) from None
        return {n: LAYER_CHOICES[int(d)] for n, d in zip(self.param_names, key)}

    def decode(self, choices: Mapping[str, Any]) -> Spec:
        return bench.spec_for_key(self.key(choices))

    def encode(self, spec: Spec) -> dict[str, Any]:
        """Spec -> choice dict; :class:`ChoiceError` if the spec is not a member."""
        try:
            return self.from_key(bench.key_for_spec(spec))
        except bench.NotAMember as e:
            raise ChoiceError(str(e)) from None

    # ------------------------------------------------------------ sampling and moves

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return {n: rng.choice(LAYER_CHOICES) for n in self.param_names}

    def neighbours(self, choices: Mapping[str, Any]) -> list[dict[str, Any]]:
        c = self.check(choices)
        return [{**c, n: v} for n in self.param_names for v in LAYER_CHOICES if v != c[n]]

    def mutate(self, choices: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
        c = self.check(choices)
        n = rng.choice(self.param_names)
        return {**c, n: rng.choice([v for v in LAYER_CHOICES if v != c[n]])}
