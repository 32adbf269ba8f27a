"""BatchNorm running statistics, re-estimated: one function for training and export.

Why it exists: the reference BN momentum (0.01 in PyTorch's convention) leaves the
running statistics of a short training run far from the data, and a freshly
initialised EfficientNet shrinks its activations layer by layer (B0's logits near
1e-14), so an evaluation, or a comparison of exported and PyTorch outputs, would
measure the lag instead of the network.  :func:`recalibrate_bn` sets the statistics
to exact averages over some inputs.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["recalibrate_bn"]


def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor]) -> nn.Module:
    """Set every BatchNorm's running statistics to exact averages over ``inputs``; returns ``model`` in eval mode.

    Only the BatchNorm layers run in training mode: stochastic depth and dropout stay
    off, so that the statistics are those of the deterministic network that is then
    evaluated or exported (a dropped residual branch would shift every statistic after
    it).  No gradients; the global RNG is not touched.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()
    if not bns:
        return model
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the inputs below
        m.train()
    try:
        with torch.no_grad():
            for x in inputs:
                model(x)
    finally:
        for m, momentum in zip(bns, saved):
            m.momentum = momentum
        model.eval()
    return model
