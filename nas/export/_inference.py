"""Inference helpers: fold BN into the convs (and optionally go channels-last) for CPU inference."""
from __future__ import annotations

__all__ = ["fuse_bn", "optimize_for_inference"]


def fuse_bn(model):
    """A copy of ``model`` (eval mode) with every Conv2d -> BatchNorm2d pair folded into one conv.

    Works on any module built from ``nn.Sequential`` runs of conv then BN (ours,
    the exported Python code).  The BN becomes ``nn.Identity``, so the state_dict
    layout changes: use the result for inference only.
    """
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return fused


def optimize_for_inference(model, channels_last: bool = True):
    """``fuse_bn(model)``, optionally in channels-last memory format (feed it channels-last input too)."""
    import torch

    fused = fuse_bn(model)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused
