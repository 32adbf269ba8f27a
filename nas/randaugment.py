"""RandAugment as tensor ops on a batch, with torchvision's op set and magnitudes.

RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a
reduced search space", CVPR-W 2020) applies ``num_ops`` operations, each drawn uniformly
from a fixed list, at one shared ``magnitude``.  This module reproduces torchvision's
``RandAugment`` (``torchvision/transforms/v2/_auto_augment.py``, table ``_AUGMENTATION_SPACE``
and ``_apply_image_or_video_transform``; the v1 class's ``_augmentation_space`` is the same
table) on float images in [0, 1], with the semantics of torchvision's tensor kernels
(``torchvision/transforms/v2/functional/_color.py`` and ``_geometry.py``).  torchvision
itself is not used: no build of it imports beside this machine's CPU torch, and its
transform works one image at a time.  Here every image of a batch (N, C, H, W), C = 1 or 3,
gets its own ops and signs, and each op runs once per op slot on the images that drew it.

The 14 ops, with magnitude table entry ``magnitude`` of ``num_magnitude_bins``:

- Identity.
- ShearX / ShearY ``m`` in linspace(0, 0.3), random sign: ``affine(shear=degrees(atan(m)))``
  about pixel (0, 0), as torchvision passes ``center=[0, 0]``: output pixel (x, y) reads
  input (x + m (y + 1/2), y) for ShearX, so the top edge stays fixed (not the centre row).
- TranslateX / TranslateY ``t`` in linspace(0, 150/331 * W resp. H), random sign, truncated to
  whole pixels (``int(t)``); positive moves content right / down.
- Rotate ``a`` in linspace(0, 30) degrees, random sign, about the image centre,
  counter-clockwise for positive ``a``.
  Geometric ops sample with nearest interpolation (``grid_sample``, ``align_corners=False``,
  on torchvision's ``_affine_grid``) and put ``fill`` outside the source image.
- Brightness / Color / Contrast / Sharpness, factor ``1 + m``, ``m`` in linspace(0, 0.9) with a
  random sign: blend ``f x + (1 - f) y`` clamped to [0, 1] with ``y`` = zeros (brightness), the
  greyscale image 0.2989 R + 0.587 G + 0.114 B (color; no-op for grey images), the mean of the
  greyscale image (contrast), the 3x3 smoothed image, kernel [[1,1,1],[1,5,1],[1,1,1]]/13
  (sharpness; border pixels kept).
- Posterize to ``b`` bits, ``b = 8 - round(arange(bins) / ((bins - 1) / 4))``; torchvision's
  float kernel: ``floor(x 2^b) / 2^b`` (levels clamped to 2^b - 1).
- Solarize with threshold ``s`` in linspace(1, 0): values ``>= s`` become ``1 - x``.
- AutoContrast: per image and channel, rescale [min, max] to [0, 1] (constant channels kept).
- Equalize: per image and channel, PIL's histogram equalization on the image quantised to
  uint8 as torchvision does (``x * (256 - 1e-3)`` truncated), result ``/ 255``.

Signed ops are negated with probability 1/2 (torchvision: ``torch.rand(()) <= 0.5``).
All randomness comes from the caller's ``torch.Generator`` (op indices first, then signs), so
the same seed gives the same output and the global RNG is never touched.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["OP_NAMES", "augmentation_space", "apply_op", "rand_augment"]

# torchvision's op order (RandAugment._AUGMENTATION_SPACE); op indices are drawn over this list.
OP_NAMES: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
    "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
    "AutoContrast", "Equalize",
)
_INDEX = {name: i for i, name in enumerate(OP_NAMES)}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_GEOMETRIC_IDS = tuple(_INDEX[name] for name in _GEOMETRIC)
_GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's _rgb_to_grayscale_image


def augmentation_space(num_bins: int, height: int, width: int) -> dict[str, tuple[torch.Tensor | None, bool]]:
    """torchvision's RandAugment table: op name -> (magnitudes over ``num_bins`` or None, signed)."""
    return {
        "Identity": (None, False),
        "ShearX": (torch.linspace(0.0, 0.3, num_bins), True),
        "ShearY": (torch.linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (torch.linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
        "TranslateY": (torch.linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
        "Rotate": (torch.linspace(0.0, 30.0, num_bins), True),
        "Brightness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Color": (torch.linspace(0.0, 0.9, num_bins), True),
        "Contrast": (torch.linspace(0.0, 0.9, num_bins), True),
        "Sharpness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Posterize": ((8 - (torch.arange(num_bins) / ((num_bins - 1) / 4))).round().int(), False),
        "Solarize": (torch.linspace(1.0, 0.0, num_bins), False),
        "AutoContrast": (None, False),
        "Equalize": (None, False),
    }


# ---------------------------------------------------------------------------------------------
# geometric ops: one grid_sample per op slot for every image that drew a geometric op


def _inverse_affine(angle, translate_x, translate_y, shear_x, shear_y, center_x, center_y) -> torch.Tensor:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1) for (n,) tensors of parameters, degrees; (n, 2, 3)."""
    rot = torch.deg2rad(angle)
    sx, sy = torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    tan_sx = torch.tan(sx)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = torch.cos(rot) - c * tan_sx
    cxt, cyt = center_x + translate_x, center_y + translate_y
    row0 = torch.stack([d, -b, center_x - d * cxt + b * cyt], dim=-1)
    row1 = torch.stack([-c, a, center_y + c * cxt - a * cyt], dim=-1)
    return torch.stack([row0, row1], dim=-2)


def _warp(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Resample each image of ``x`` by its inverse matrix (pixel units about the centre), nearest, ``fill`` outside."""
    n, c, h, w = x.shape
    theta = theta.to(dtype=x.dtype, device=x.device)
    # torchvision's _affine_grid: centred pixel coordinates through theta, then normalised by (w/2, h/2)
    base = torch.empty(h, w, 3, dtype=x.dtype, device=x.device)
    base[..., 0] = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, dtype=x.dtype, device=x.device)
    base[..., 1] = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, dtype=x.dtype, device=x.device)[:, None]
    base[..., 2] = 1.0
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=x.dtype, device=x.device)
    grid = torch.matmul(base.view(1, h * w, 3), theta.transpose(1, 2) / scale).view(n, h, w, 2)
    if fill == 0.0:
        return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    # torchvision's fill: sample a ones channel along, and fill where it came back below 1/2
    out = F.grid_sample(torch.cat([x, x.new_ones(n, 1, h, w)], dim=1), grid, mode="nearest",
                        padding_mode="zeros", align_corners=False)
    out, mask = out[:, :c], out[:, c:]
    return torch.where(mask < 0.5, out.new_tensor(fill), out)


def _geometric(x: torch.Tensor, ops: torch.Tensor, mags: torch.Tensor, fill: float) -> torch.Tensor:
    """ShearX/Y, TranslateX/Y, Rotate for images with op ids ``ops`` and signed magnitudes ``mags`` (float64)."""
    _, _, h, w = x.shape
    zero = torch.zeros_like(mags)
    is_op = {name: ops == _INDEX[name] for name in _GEOMETRIC}
    shear = is_op["ShearX"] | is_op["ShearY"]
    shear_deg = torch.rad2deg(torch.atan(mags))  # math.degrees(math.atan(magnitude))
    matrices = _inverse_affine(
        angle=torch.where(is_op["Rotate"], -mags, zero),  # F.rotate passes -angle to the affine matrix
        translate_x=torch.where(is_op["TranslateX"], mags.trunc(), zero),  # int(magnitude)
        translate_y=torch.where(is_op["TranslateY"], mags.trunc(), zero),
        shear_x=torch.where(is_op["ShearX"], shear_deg, zero),
        shear_y=torch.where(is_op["ShearY"], shear_deg, zero),
        center_x=torch.where(shear, zero - 0.5 * w, zero),  # center=[0, 0]: pixel (0, 0), centred coordinates
        center_y=torch.where(shear, zero - 0.5 * h, zero),
    )
    return _warp(x, matrices, fill)


# ---------------------------------------------------------------------------------------------
# colour ops, one call for the images that drew the op; ``m`` is (n,) float64 of signed magnitudes


def _per_image(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return m.to(dtype=x.dtype, device=x.device).view(-1, 1, 1, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(dim=1)
    return r.mul(_GREY_WEIGHTS[0]).add_(g, alpha=_GREY_WEIGHTS[1]).add_(b, alpha=_GREY_WEIGHTS[2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``f x + (1 - f) other`` clamped to [0, 1], ``f = 1 + m`` per image (both weights rounded as torchvision's)."""
    factor = 1.0 + m
    return (x * _per_image(factor, x) + other * _per_image(1.0 - factor, x)).clamp_(0.0, 1.0)


def _brightness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (x * _per_image(1.0 + m, x)).clamp_(0.0, 1.0)


def _color(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:  # torchvision (and PIL): saturation of a grey image is the image
        return x.clone()
    return _blend(x, _grey(x), m)


def _contrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    grey = _grey(x) if x.shape[1] == 3 else x
    return _blend(x, grey.mean(dim=(1, 2, 3), keepdim=True), m)


def _sharpness(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x.clone()
    kernel = torch.full((3, 3), 1.0 / 13.0, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5.0 / 13.0
    blurred = F.conv2d(x.reshape(n * c, 1, h, w), kernel.view(1, 1, 3, 3)).view(n, c, h - 2, w - 2)
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    inner.add_((blurred - inner) * _per_image(1.0 - (1.0 + m), x))  # x + (1 - f)(blur - x), f = 1 + m
    return out.clamp_(0.0, 1.0)


def _posterize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    levels = _per_image(torch.exp2(m.trunc()), x)  # bits = int(magnitude)
    return torch.minimum((x * levels).floor_(), levels - 1.0).clamp_(min=0.0).mul_(1.0 / levels)


def _solarize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= _per_image(m, x), 1.0 - x, x)


def _autocontrast(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    low = x.amin(dim=(2, 3), keepdim=True)
    high = x.amax(dim=(2, 3), keepdim=True)
    flat = high == low
    low = torch.where(flat, torch.zeros_like(low), low)
    scale = torch.where(flat, torch.ones_like(high), high - low)
    return ((x - low) / scale).clamp_(0.0, 1.0)


def _equalize(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """torchvision's ``equalize_image`` (PIL's LUT scheme), batched over images and channels."""
    n, c, h, w = x.shape
    q = (x * (256.0 - 1e-3)).to(torch.uint8).view(n, c, h * w).long()  # to_dtype_image(float -> uint8)
    hist = torch.zeros(n, c, 256, dtype=torch.int64, device=x.device)
    hist.scatter_add_(-1, q, torch.ones_like(q))
    cum = hist.cumsum(-1)
    last = cum.argmax(-1, keepdim=True)  # the largest value present
    step = torch.div(h * w - hist.gather(-1, last), 255, rounding_mode="floor")
    valid = step != 0
    lut = torch.div(cum[..., :-1] + step // 2, step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    lut = torch.cat([torch.zeros_like(lut[..., :1]), lut], dim=-1)
    out = torch.where(valid, lut.gather(-1, q), q)
    return out.to(x.dtype).mul_(1.0 / 255.0).view(n, c, h, w)  # to_dtype_image(uint8 -> float)


def _identity(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return x


_COLOR_OPS = {
    "Identity": _identity, "Brightness": _brightness, "Color": _color, "Contrast": _contrast,
    "Sharpness": _sharpness, "Posterize": _posterize, "Solarize": _solarize,
    "AutoContrast": _autocontrast, "Equalize": _equalize,
}
_COLOR_BY_ID = {_INDEX[name]: fn for name, fn in _COLOR_OPS.items()}


def _apply(x: torch.Tensor, ops: torch.Tensor, mags: torch.Tensor, fill: float) -> torch.Tensor:
    """One op slot: image i gets op ``ops[i]`` with signed magnitude ``mags[i]`` (float64); a new tensor."""
    out = x.clone()
    geometric = torch.zeros_like(ops, dtype=torch.bool)
    for k in _GEOMETRIC_IDS:
        geometric |= ops == k
    idx = geometric.nonzero().squeeze(1)
    if idx.numel():
        out[idx] = _geometric(x[idx], ops[idx], mags[idx], fill)
    counts = torch.bincount(ops, minlength=len(OP_NAMES)).tolist()
    for k, fn in _COLOR_BY_ID.items():
        if counts[k] == 0 or fn is _identity:
            continue
        idx = (ops == k).nonzero().squeeze(1)
        out[idx] = fn(x[idx], mags[idx])
    return out


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] not in (1, 3):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a batch of images (N, C, H, W) with C = 1 or 3, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {x.dtype}")


def _check_fill(fill: float) -> float:
    fill = float(fill)
    if not 0.0 <= fill <= 1.0:
        raise ValueError(f"fill must be in [0, 1], got {fill}")
    return fill


def apply_op(x: torch.Tensor, op: str, magnitude: float | torch.Tensor, *, fill: float = 0.0) -> torch.Tensor:
    """Op ``op`` (a name of ``OP_NAMES``) at signed ``magnitude`` (a number, or one per image) on the batch ``x``.

    ``magnitude`` is in the units of ``augmentation_space`` (pixels, degrees, bits, threshold,
    ``factor - 1``), as torchvision's ``_apply_image_or_video_transform`` takes it.
    """
    _check_images(x)
    if op not in _INDEX:
        raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OP_NAMES)}")
    n = x.shape[0]
    mags = torch.as_tensor(magnitude, dtype=torch.float64).flatten().cpu()
    if mags.numel() == 1:
        mags = mags.expand(n)
    elif mags.numel() != n:
        raise ValueError(f"magnitude must be a number or one per image ({n}), got {mags.numel()}")
    ops = torch.full((n,), _INDEX[op], dtype=torch.long)
    return _apply(x, ops.to(x.device), mags.to(x.device), _check_fill(fill))


def rand_augment(x: torch.Tensor, generator: torch.Generator, *, num_ops: int = 2, magnitude: int = 9,
                 num_magnitude_bins: int = 31, fill: float = 0.0) -> torch.Tensor:
    """A RandAugmented copy of the batch ``x`` (N, C, H, W), float in [0, 1]: ``num_ops`` random ops per image."""
    _check_images(x)
    for name, value in (("num_ops", num_ops), ("magnitude", magnitude), ("num_magnitude_bins", num_magnitude_bins)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if num_ops < 0:
        raise ValueError(f"num_ops must be >= 0, got {num_ops}")
    if num_magnitude_bins < 2:
        raise ValueError(f"num_magnitude_bins must be >= 2, got {num_magnitude_bins}")
    if not 0 <= magnitude < num_magnitude_bins:
        raise ValueError(f"magnitude must be in [0, num_magnitude_bins) = [0, {num_magnitude_bins}), got {magnitude}")
    fill = _check_fill(fill)
    n, _, h, w = x.shape
    if num_ops == 0 or n == 0:
        return x.clone()

    # the whole draw first, from the caller's generator: op index per slot, then sign per slot
    ops = torch.randint(len(OP_NAMES), (n, num_ops), generator=generator)
    negative = torch.rand((n, num_ops), generator=generator) <= 0.5
    # magnitude of each op at entry ``magnitude`` (0 for ops without one), negated where signed and drawn so
    table = torch.zeros(len(OP_NAMES), dtype=torch.float64)
    signed = torch.zeros(len(OP_NAMES), dtype=torch.bool)
    for k, (values, is_signed) in enumerate(augmentation_space(num_magnitude_bins, h, w).values()):
        if values is not None:
            table[k] = float(values[magnitude])
        signed[k] = is_signed
    mags = torch.where(signed[ops] & negative, -table[ops], table[ops])

    out = x
    ops, mags = ops.to(x.device), mags.to(x.device)
    for slot in range(num_ops):
        out = _apply(out, ops[:, slot], mags[:, slot], fill)
    return out
