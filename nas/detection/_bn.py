"""BatchNorm statistics from a few batches (the detector's export and training use it).

Main's ``nas.bn.recalibrate_bn`` (added concurrently) does the same for classifiers; this copy keeps the
detector independent of that module's arrival and can be replaced by it once both are merged.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def recalibrate_bn(model: nn.Module, inputs: Iterable[torch.Tensor]) -> nn.Module:
    """Reset every BN's running statistics to the exact average over ``inputs``; returns ``model`` in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after the batches, exactly their statistics
    model.train()
    try:
        with torch.no_grad():
            for x in inputs:
                model(x)
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.eval()
    return model
