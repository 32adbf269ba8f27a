"""The exporters' shared check: an exported file's outputs against PyTorch's, on seeded random input.

Each output may differ by at most ``TOLERANCE + RTOL * max|PyTorch's output|`` (:func:`tolerance`);
the classifiers' exporters (:mod:`._onnx`, :mod:`._torchscript`) and the detector's
(:mod:`nas.detection.export`) all compare through :func:`compare_outputs`.
"""
from __future__ import annotations

import math

from ..spec import Spec

__all__ = ["ExportError", "MissingDependency", "TOLERANCE", "RTOL", "VERIFY_BATCHES", "tolerance", "compare_outputs",
           "describe_check", "mismatch", "verification_inputs"]

TOLERANCE = 1e-4
"""Absolute part of the check: on random input, each output of an exported file may differ from
PyTorch's by at most ``TOLERANCE + RTOL * max|PyTorch's output|`` (:func:`tolerance`)."""

RTOL = 1e-3
"""Relative part of the check, scaled by each output's largest absolute value: float32 rounding grows
with the outputs' scale and depends on the machine's kernels (EfficientDet-D0's raw outputs reach ~84
and differ by ~6e-4 on some CPUs).  1e-3 is PyTorch's own ONNX verification default."""

VERIFY_BATCHES = (1, 3)
"""Batch sizes the exporters check (3, not 2: a batch of 2 hides some axis mix-ups)."""


class ExportError(RuntimeError):
    """The export could not be done or did not verify (a runtime failure: exit 1)."""


class MissingDependency(ExportError):
    """An optional package (onnx, onnxruntime) is not installed."""


def verification_inputs(spec: Spec, resolution: int, seed: int = 0):
    """Seeded random input batches of the sizes :data:`VERIFY_BATCHES`."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, spec.in_channels, resolution, resolution, generator=g) for b in VERIFY_BATCHES]


def tolerance(scale: float) -> float:
    """The largest difference accepted for an output whose largest absolute PyTorch value is ``scale``."""
    return TOLERANCE + RTOL * scale


def compare_outputs(name: str, ref_outputs, outputs, labels=None) -> dict:
    """Compare exported outputs with PyTorch's (shape, finiteness, then :func:`tolerance` per output).

    Returns ``max_abs_diff``, ``max_rel_diff`` (a difference over its output's largest absolute
    value), ``max_abs_output`` and ``within`` (every output within its tolerance).
    """
    import numpy as np

    res = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "max_abs_output": 0.0, "within": True}
    for i, (ref, out) in enumerate(zip(ref_outputs, outputs)):
        what = f"{name} output" + (f" {labels[i]}" if labels else "")
        out = np.asarray(out)
        if out.shape != ref.shape:
            raise ExportError(f"{what} has shape {out.shape}, PyTorch's {ref.shape}")
        if not np.isfinite(out).all():
            raise ExportError(f"{what} is not finite")
        diff = float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64)), initial=0.0))
        scale = float(np.max(np.abs(ref.astype(np.float64)), initial=0.0))
        res["max_abs_diff"] = max(res["max_abs_diff"], diff)
        res["max_rel_diff"] = max(res["max_rel_diff"], diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
        res["max_abs_output"] = max(res["max_abs_output"], scale)
        res["within"] = res["within"] and diff <= tolerance(scale)
    return res


def describe_check(report: dict) -> str:
    """The check's figures as the commands print them: both differences and the tolerance."""
    return (f"max |diff| {report['max_abs_diff']:.2g}, relative {report['max_rel_diff']:.2g} (tolerance "
            f"{report['atol']:g} + {report['rtol']:g} x max |output|, each output; largest |output| "
            f"{report['max_abs_output']:.3g})")


def mismatch(name: str, cmp: dict) -> str:
    """The failure message for a :func:`compare_outputs` result that is not ``within``."""
    return (f"{name} differs from PyTorch by {cmp['max_abs_diff']:.3g}, relative {cmp['max_rel_diff']:.2g} "
            f"(tolerance {TOLERANCE:g} + {RTOL:g} x max |output|, each output)")
