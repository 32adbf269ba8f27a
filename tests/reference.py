"""Reference numbers the tests compare against, each with its source.

One home, so that a number is typed once and its source is stated once.  Tests
import it as ``from reference import ...`` (pytest puts ``tests/`` on the path).

Sources, by kind:

* **torchvision params**: ``sum(p.numel() for p in torchvision.models.<name>().parameters())``
  with torchvision 0.29.1 (1000 classes); torchvision also publishes them as the weights'
  ``meta["num_params"]`` (e.g. ``EfficientNet_B0_Weights.IMAGENET1K_V1``: 5288548).
* **fvcore FLOPs**: ``fvcore.nn.FlopCountAnalysis(model.eval(), torch.zeros(1, 3, R, R)).total()``
  with fvcore 0.1.5 on the same torchvision model at its own resolution ``R``: one
  multiply-add is one flop; conv, linear, batch norm and adaptive average pooling count.
* **papers**: EfficientNet (Tan & Le 2019, arXiv 1905.11946), MnasNet (Tan et al. 2019,
  arXiv 1807.11626), Noisy Student (Xie et al. 2020, arXiv 1911.04252).
* **regression**: our own exact values where no external exact reference exists; they
  pin behaviour, they do not prove it (marked as such below).
"""
from __future__ import annotations

from typing import NamedTuple


class Cost(NamedTuple):
    resolution: int
    params: int
    flops: int


# EfficientNet B0..B7: torchvision ``efficientnet_b0`` .. ``efficientnet_b7`` params and
# fvcore FLOPs, each at the model's own resolution (the published one).
EFFICIENTNET = {
    "efficientnet-b0": Cost(224, 5_288_548, 401_659_392),
    "efficientnet-b1": Cost(240, 7_794_184, 712_732_416),
    "efficientnet-b2": Cost(260, 9_109_994, 1_026_579_120),
    "efficientnet-b3": Cost(300, 12_233_232, 1_883_903_568),
    "efficientnet-b4": Cost(380, 19_341_616, 4_512_495_200),
    "efficientnet-b5": Cost(456, 30_389_784, 10_505_072_320),
    "efficientnet-b6": Cost(528, 43_040_704, 19_472_062_160),
    "efficientnet-b7": Cost(600, 66_347_960, 38_449_437_600),
}
B0 = EFFICIENTNET["efficientnet-b0"]

# fvcore's ``by_operator()`` on torchvision's B0 at 224 (sums to B0.flops).  Pins fvcore's
# counting rules, which changed between versions (batch norm and adaptive pooling were once skipped).
B0_FVCORE_BY_OPERATOR = {"conv": 384_534_752, "batch_norm": 13_475_392, "adaptive_avg_pool2d": 2_369_248,
                         "linear": 1_280_000}

# torchvision ``mobilenet_v2``: params and fvcore FLOPs at 224.
MOBILENET_V2 = Cost(224, 3_504_872, 314_193_216)

# torchvision ``mnasnet1_0`` (MnasNet-B1): params, and fvcore FLOPs at 224.  It pools globally
# with ``x.mean([2, 3])``, which fvcore does not count; our spec pools with
# ``nn.AdaptiveAvgPool2d`` (1 flop per input element, torchvision EfficientNet's convention),
# so our count is higher by the head's 1280 x 7 x 7 input elements.
MNASNET1_0 = Cost(224, 4_383_312, 325_329_152)
MNASNET1_0_POOL_FLOPS = 1280 * 7 * 7

# Papers, rounded as published.
MNASNET_A1_PAPER_PARAMS_M = 3.9  # MnasNet, Table 1: 3.9M params
MNASNET_A1_PAPER_MULT_ADDS_M = 312  # MnasNet, Table 1: 312M multiply-adds (conv + linear only)
EFFICIENTNET_L2_PAPER_PARAMS_M = 480  # Noisy Student: EfficientNet-L2 has 480M params

# Regression values (no external exact reference): our exact counts for the presets above.
MNASNET_A1_REGRESSION = Cost(224, 3_887_038, 324_682_848)
MNASNET_A1_CONV_LINEAR_REGRESSION = 311_579_072  # the FLOPs without BN and pooling: the paper's 312M
EFFICIENTNET_L2_REGRESSION = Cost(800, 480_309_308, 479_868_213_280)

# EfficientNet-B0, Table 1 of the paper: per stage (expand, kernel, stride, out channels, repeats);
# SE 0.25 and swish everywhere; stem 3x3 stride 2 to 32 channels, head 1x1 to 1280, 224 px, dropout 0.2.
EFFICIENTNET_B0_TABLE = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                         (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]

# The published family's (width, depth, resolution, dropout): B0..B7 from the EfficientNet
# reference implementation's ``efficientnet_params`` (tensorflow/tpu,
# models/official/efficientnet/efficientnet_builder.py); L2 from Noisy Student, Table 7.
EFFICIENTNET_SCALING = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2), "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3), "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4), "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5), "efficientnet-b7": (2.0, 3.1, 600, 0.5),
    "efficientnet-l2": (4.3, 5.3, 800, 0.5),
}
