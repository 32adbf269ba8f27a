"""Weights for the exporters: read a state dict safely, check it against a spec, or make seeded ones."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["WeightsError", "check_state_dict", "read_state_dict", "load_weights", "fit_spec_to_weights",
           "initialized_model", "model_to_export", "INIT_WEIGHTS"]


class WeightsError(ValueError):
    """The weights file is unreadable or does not fit the spec (bad input: exit 2)."""


def check_state_dict(model, state: Mapping[str, Any], source: str = "weights") -> None:
    """Raise :class:`WeightsError` naming the first tensor of ``state`` that does not fit ``model``."""
    import torch

    expected = model.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise WeightsError(f"{source} do not match the spec: missing tensor {key} (shape {tuple(ref.shape)})")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise WeightsError(f"{source} do not match the spec: {key} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(ref.shape):
            raise WeightsError(f"{source} do not match the spec: {key} has shape {tuple(got.shape)}, "
                               f"the spec needs {tuple(ref.shape)}")
        if got.is_floating_point() != ref.is_floating_point():
            raise WeightsError(f"{source} do not match the spec: {key} has dtype {got.dtype}, expected {ref.dtype}")
    for key in state:
        if key not in expected:
            raise WeightsError(f"{source} do not match the spec: unexpected tensor {key}")


def read_state_dict(path: str | os.PathLike) -> dict:
    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"cannot read weights {p}: no such file")
    try:
        # weights_only: a weights file is data; never unpickle arbitrary objects.
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise WeightsError(f"cannot read weights {p}: {type(e).__name__}: {msg}") from None
    # Accept a bare state_dict or a training checkpoint that holds one.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"cannot read weights {p}: not a state_dict (a mapping of tensor names to tensors)")
    return dict(obj)


def load_weights(spec, path_or_state) -> "torch.nn.Module":
    """``build_model(spec)`` with weights loaded (a path to a ``.pt`` state_dict, or a state_dict).

    Raises :class:`WeightsError` (one line, naming the first mismatching tensor) when they do not fit.
    """
    from ..build import build_model
    from ..presets import load_spec

    spec = load_spec(spec)
    model = build_model(spec)
    if isinstance(path_or_state, Mapping):
        state, source = dict(path_or_state), "weights"
    else:
        state, source = read_state_dict(path_or_state), f"weights {path_or_state}"
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


def fit_spec_to_weights(spec, path_or_state) -> tuple[Any, list[str]]:
    """``spec`` with ``num_classes`` and ``in_channels`` taken from the weights' classifier and stem.

    Returns the (possibly) changed spec and one note per change, e.g. ``num_classes 1000 -> 10``,
    for the caller to show: weights inherited from a supernet or trained by ``nas-train`` have
    the data's classes, while a searched spec keeps the skeleton's.  Anything else that
    does not fit is left to :func:`check_state_dict`.
    """
    from ..presets import load_spec

    spec = load_spec(spec)
    state = dict(path_or_state) if isinstance(path_or_state, Mapping) else read_state_dict(path_or_state)
    changes: dict[str, int] = {}
    fc, stem = state.get("classifier.weight"), state.get("stem.0.weight")
    if getattr(fc, "ndim", 0) == 2 and fc.shape[0] != spec.num_classes:
        changes["num_classes"] = int(fc.shape[0])
    if getattr(stem, "ndim", 0) == 4 and stem.shape[1] != spec.in_channels:
        changes["in_channels"] = int(stem.shape[1])
    if not changes:
        return spec, []
    notes = [f"{k} {getattr(spec, k)} -> {v}" for k, v in changes.items()]
    return spec.replace(**changes), notes


def initialized_model(spec, seed: int = 0, calibration_resolution: int | None = None):
    """``build_model(spec)`` with a seeded init and BN statistics from one seeded random batch of 8.

    What the exporters use when no weights are given: reproducible, and numerically
    meaningful to verify (see :mod:`nas.bn`).  Calibration runs at ``min(resolution, 128)``
    by default, to stay cheap for the large presets.
    """
    import torch

    from ..bn import recalibrate_bn
    from ..build import build_model
    from ..presets import load_spec

    spec = load_spec(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    res = calibration_resolution or min(spec.resolution, 128)
    g = torch.Generator().manual_seed(seed)
    return recalibrate_bn(model, [torch.randn(8, spec.in_channels, res, res, generator=g)])


def model_to_export(spec, weights, resolution):
    """(spec, the model in eval mode with ``weights`` or seeded initial ones, resolution, where the weights came from)."""
    from ..presets import load_spec
    from ..spec import MAX_RESOLUTION

    spec = load_spec(spec)
    if resolution is None:
        resolution = spec.resolution
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 1 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution must be an integer in [1, {MAX_RESOLUTION}], got {resolution!r}")
    if weights is None:
        model, source = initialized_model(spec, calibration_resolution=min(resolution, 128)), INIT_WEIGHTS
    else:
        model = load_weights(spec, weights)
        source = str(weights) if not isinstance(weights, Mapping) else "state_dict"
    return spec, model.eval(), resolution, source


INIT_WEIGHTS = "initialised (seed 0, BN statistics calibrated on one random batch)"
