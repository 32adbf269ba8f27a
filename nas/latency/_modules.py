"""An entry as the module the builder makes for it, with a batch-1 input of the shape it sees in the network."""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import LAYERS, ConvBNAct
from ._keys import Entry

__all__ = ["entry_module"]


def _stem(e: Entry) -> nn.Module:
    return ConvBNAct(e.in_channels, e.out_channels, e.kernel, e.stride, activation=e.activation)


def _layer(e: Entry) -> nn.Module:
    # the effective skip is a valid builder argument that builds the same module
    return LAYERS[e.op](in_channels=e.in_channels, out_channels=e.out_channels, kernel=e.kernel, stride=e.stride,
                        expand_ratio=e.expand_ratio, se_ratio=e.se_ratio, skip=e.skip, activation=e.activation,
                        se_activation=e.se_activation or "swish", drop_path=0.0, bn_eps=1e-3, bn_momentum=0.01)


def _head(e: Entry) -> nn.Module:
    return ConvBNAct(e.in_channels, e.out_channels, 1, activation=e.activation)


def _pool(e: Entry) -> nn.Module:
    # Network.forward: torch.flatten(self.pool(x), 1)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def _classifier(e: Entry) -> nn.Module:
    return nn.Linear(e.in_channels, e.out_channels)  # dropout before it is the identity at inference


_MAKERS = {"stem": _stem, "layer": _layer, "head": _head, "pool": _pool, "classifier": _classifier}


def entry_module(entry: Entry, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """(module in eval mode, input) for timing ``entry`` as it runs inside a network at batch 1."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = _MAKERS[entry.kind](entry).eval()
        if entry.kind == "classifier":
            x = torch.randn(1, entry.in_channels)
        else:
            x = torch.randn(1, entry.in_channels, entry.resolution, entry.resolution)
    return module, x
