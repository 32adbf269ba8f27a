"""Search spaces: registry :data:`SPACES` maps a space name to a space object.

A space turns a dict of categorical choices into a :class:`nas.spec.Spec`
(``decode``) and back (``encode``), exposes its choices as Optuna distributions
(``distributions()``), and offers ``size``, ``sample(rng)``, ``mutate`` and
``neighbours`` for strategies that need them.
"""
from __future__ import annotations

from typing import Union

from .mnasnet import CHOICES, ChoiceError, MnasNetSpace
from .nas_bench_macro import NasBenchMacroSpace

__all__ = ["SPACES", "DEFAULT_SPACE", "get_space", "MnasNetSpace", "NasBenchMacroSpace", "ChoiceError", "CHOICES"]

SPACES: dict[str, Union[MnasNetSpace, NasBenchMacroSpace]] = {
    # MnasNet's factorized space over EfficientNet-B0's 7-stage skeleton (B0 is a member)
    "mnasnet-b0": MnasNetSpace("mnasnet-b0", "efficientnet-b0"),
    # the same space over MobileNetV2's skeleton, the MnasNet paper's reference
    "mnasnet-mbv2": MnasNetSpace("mnasnet-mbv2", "mobilenet-v2"),
    # NAS-Bench-Macro's 6,561 MBConv networks on CIFAR-10 (a public tabular benchmark;
    # nas.benchmarks, docs/nas-bench-macro.md): members decode to and from its 8-digit keys
    "nas-bench-macro": NasBenchMacroSpace(),
}

DEFAULT_SPACE = "mnasnet-b0"


def get_space(name: str) -> Union[MnasNetSpace, NasBenchMacroSpace]:
    try:
        return SPACES[name]
    except KeyError:
        raise KeyError(f"unknown search space {name!r}; spaces: {', '.join(SPACES)}") from None
