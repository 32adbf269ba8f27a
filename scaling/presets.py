"""The named architectures, written as the papers' tables, and the generator of
``nas/presets/*.json``.

The core (:mod:`nas.presets`) only reads the bundled JSON; this module is where
those files come from.  ``python -m scaling.presets`` rewrites them, and a test
regenerates them in memory and compares.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nas.spec import Spec

from .compound import PUBLISHED, published_spec

__all__ = ["base_specs", "all_presets", "write_presets", "PRESET_DIR"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "nas" / "presets"

# One row per stage, as in the papers: (op, expand, kernel, stride, out, repeats, se, skip).
EFFICIENTNET_B0 = [
    ("dwconv", 1, 3, 1, 16, 1, 0.25, "identity"),
    ("mbconv", 6, 3, 2, 24, 2, 0.25, "identity"),
    ("mbconv", 6, 5, 2, 40, 2, 0.25, "identity"),
    ("mbconv", 6, 3, 2, 80, 3, 0.25, "identity"),
    ("mbconv", 6, 5, 1, 112, 3, 0.25, "identity"),
    ("mbconv", 6, 5, 2, 192, 4, 0.25, "identity"),
    ("mbconv", 6, 3, 1, 320, 1, 0.25, "identity"),
]

# MnasNet-A1 (Tan et al. 2019, Figure 7): ReLU; SE squeezes from the block input.
MNASNET_A1 = [
    ("dwconv", 1, 3, 1, 16, 1, 0.0, "none"),  # SepConv, no skip (as in the paper)
    ("mbconv", 6, 3, 2, 24, 2, 0.0, "identity"),
    ("mbconv", 3, 5, 2, 40, 3, 0.25, "identity"),
    ("mbconv", 6, 3, 2, 80, 4, 0.0, "identity"),
    ("mbconv", 6, 3, 1, 112, 2, 0.25, "identity"),
    ("mbconv", 6, 5, 2, 160, 3, 0.25, "identity"),
    ("mbconv", 6, 3, 1, 320, 1, 0.0, "identity"),
]

# MnasNet-B1 as torchvision's mnasnet1_0 builds it: depthwise-separable stem block
# 32 -> 16 without skip, then six inverted-residual stacks, no SE, ReLU.
MNASNET_B1 = [
    ("dwconv", 1, 3, 1, 16, 1, 0.0, "none"),
    ("mbconv", 3, 3, 2, 24, 3, 0.0, "identity"),
    ("mbconv", 3, 5, 2, 40, 3, 0.0, "identity"),
    ("mbconv", 6, 5, 2, 80, 3, 0.0, "identity"),
    ("mbconv", 6, 3, 1, 96, 2, 0.0, "identity"),
    ("mbconv", 6, 5, 2, 192, 4, 0.0, "identity"),
    ("mbconv", 6, 3, 1, 320, 1, 0.0, "identity"),
]

# MobileNetV2 (Sandler et al. 2018, Table 2): t, c, n, s with ReLU6 and 3x3 kernels.
MOBILENET_V2 = [
    ("dwconv", 1, 3, 1, 16, 1, 0.0, "identity"),
    ("mbconv", 6, 3, 2, 24, 2, 0.0, "identity"),
    ("mbconv", 6, 3, 2, 32, 3, 0.0, "identity"),
    ("mbconv", 6, 3, 2, 64, 4, 0.0, "identity"),
    ("mbconv", 6, 3, 1, 96, 3, 0.0, "identity"),
    ("mbconv", 6, 3, 2, 160, 3, 0.0, "identity"),
    ("mbconv", 6, 3, 1, 320, 1, 0.0, "identity"),
]


def _spec(name: str, rows, *, activation: str, se_activation: str, dropout: float, drop_connect: float,
          bn_eps: float, bn_momentum: float, source: str) -> Spec:
    return Spec.from_dict({
        "format": "nas-spec",
        "version": 1,
        "name": name,
        "in_channels": 3,
        "resolution": 224,
        "num_classes": 1000,
        "activation": activation,
        "stem": {"out_channels": 32, "kernel": 3, "stride": 2},
        "stages": [
            {"op": op, "kernel": k, "stride": s, "expand_ratio": e, "se_ratio": se, "skip": skip,
             "out_channels": c, "repeats": n, "activation": activation, "se_activation": se_activation}
            for op, e, k, s, c, n, se, skip in rows
        ],
        "head": {"out_channels": 1280},
        "dropout": dropout,
        "drop_connect_rate": drop_connect,
        "bn": {"eps": bn_eps, "momentum": bn_momentum},
        "provenance": {"preset": name, "source": source},
    })


def base_specs() -> dict[str, Spec]:
    """The unscaled, hand-written architectures."""
    return {
        "efficientnet-b0": _spec("efficientnet-b0", EFFICIENTNET_B0, activation="swish", se_activation="swish",
                                 dropout=0.2, drop_connect=0.2, bn_eps=1e-3, bn_momentum=0.01,
                                 source="EfficientNet (Tan & Le 2019), Table 1; TF reference BN settings"),
        "mnasnet-a1": _spec("mnasnet-a1", MNASNET_A1, activation="relu", se_activation="relu",
                            dropout=0.2, drop_connect=0.0, bn_eps=1e-3, bn_momentum=0.01,
                            source="MnasNet (Tan et al. 2019), Figure 7(a)"),
        "mnasnet-b1": _spec("mnasnet-b1", MNASNET_B1, activation="relu", se_activation="relu",
                            dropout=0.2, drop_connect=0.0, bn_eps=1e-5, bn_momentum=0.0003,
                            source="MnasNet-B1 as in torchvision's mnasnet1_0"),
        "mobilenet-v2": _spec("mobilenet-v2", MOBILENET_V2, activation="relu6", se_activation="relu6",
                              dropout=0.2, drop_connect=0.0, bn_eps=1e-5, bn_momentum=0.1,
                              source="MobileNetV2 (Sandler et al. 2018), Table 2"),
    }


def all_presets() -> dict[str, Spec]:
    """Every bundled preset, generated from the tables above."""
    bases = base_specs()
    out = dict(bases)
    for name in PUBLISHED:
        if name != "efficientnet-b0":
            out[name] = published_spec(bases["efficientnet-b0"], name)
    return dict(sorted(out.items()))


def write_presets(directory: Path = PRESET_DIR) -> list[Path]:
    paths = []
    for name, spec in all_presets().items():
        path = directory / f"{name}.json"
        spec.save(path)
        paths.append(path)
    return paths


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Regenerate the bundled preset JSON files in nas/presets/.")
    ap.add_argument("--dir", type=Path, default=PRESET_DIR)
    args = ap.parse_args(argv)
    for p in write_presets(args.dir):
        print(p)


if __name__ == "__main__":
    main()
