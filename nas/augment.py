"""Train-time augmentation for small images, as tensor ops on a batch.

The standard small-image augmentation (CIFAR's ResNet recipe, He et al. 2016, Sec. 4.2):
pad every side by ``pad`` pixels with zeros, take a random ``H x W`` crop, and flip
horizontally with probability 1/2.  Applied per example, on the already resized and
normalized batch, so it works for every data source and costs a few microseconds per
image (no PIL, no torchvision).  Zero is the padding value after normalization, i.e.
the data set's mean, which is what a padded crop of a centred object should look like.

Randomness comes from a ``torch.Generator`` owned by the caller, so a training run is
deterministic with its seed and the augmentation never shifts the model's own RNG.
"""
from __future__ import annotations

import torch

__all__ = ["default_pad", "augment_batch"]


def default_pad(resolution: int) -> int:
    """Padding for a random crop: 4 px at 32 px (CIFAR's rule), scaled with the resolution."""
    return max(1, round(resolution / 8))


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, pad: int | None = None,
                  flip: bool = True) -> torch.Tensor:
    """A randomly cropped (zero padding ``pad``) and horizontally flipped copy of the batch ``x`` (N, C, H, W)."""
    if x.ndim != 4:
        raise ValueError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    p = default_pad(min(h, w)) if pad is None else int(pad)
    if p < 0:
        raise ValueError(f"pad must be >= 0, got {p}")
    offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    padded = torch.nn.functional.pad(x, (p, p, p, p)) if p else x
    # one gather for the whole batch: example i reads rows dy_i.. and columns dx_i.. (reversed when flipped)
    rows = offsets[:, :1] + torch.arange(h)  # (n, h)
    cols = torch.arange(w).expand(n, w)
    cols = torch.where(flips[:, None], cols.flip(-1), cols) + offsets[:, 1:]  # (n, w)
    out = padded[torch.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()
