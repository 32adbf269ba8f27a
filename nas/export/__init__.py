"""Exporters: a spec as standalone PyTorch code, as ONNX, or as TorchScript.

Three outputs, one rule each:

* :func:`export_python` writes *code*: one readable file that depends only on
  torch, with the architecture as a literal per-stage table, followed by the
  toolkit's own layer code embedded verbatim (``nas/blocks.py``,
  :func:`nas.spec.plan_layers`, :class:`nas.build.Network`; see ``_EMBEDDED``).
  Its module names and parameter shapes are those of
  :func:`nas.build.build_model`, so weights load both ways with ``strict=True``
  and the outputs are identical; an op added to the toolkit needs no edit here.  Nothing
  from the spec reaches the code unescaped: numbers and strings go through
  ``repr``, the class name must be a plain identifier, and the provenance goes
  into the docstring through :func:`_docstring_literal`.  The result is parsed
  back before it is returned, so a bug here fails loudly instead of writing
  code that says something else than the spec.
* :func:`export_onnx` and :func:`export_torchscript` write a *verified* file:
  the model is exported from ``eval()`` mode, the result is run (onnxruntime or
  ``torch.jit.load``) at batch 1 and batch 3 and compared with PyTorch (each
  output within ``TOLERANCE + RTOL * max|output|``), and only then is the file
  renamed into place.  A failed check leaves nothing behind.

:func:`fuse_bn` and :func:`optimize_for_inference` fold BN into the convs (and
optionally switch to channels-last) for CPU inference; they change the module
layout, so use them on a copy, never on a model whose ``state_dict`` you save.

One module per format: :mod:`._code` (``py``), :mod:`._onnx`, :mod:`._torchscript`; the check
they share in :mod:`._verify`, weights in :mod:`._weights`, the inference helpers in
:mod:`._inference`.  This module is the registry (:data:`FORMATS`) and the public names.
"""
from __future__ import annotations

import os

from ._code import GENERATED_NAMES as _GENERATED_NAMES  # noqa: F401  (the tests check class names against it)
from ._code import check_class_name, default_class_name, export_python, write_python
from ._inference import fuse_bn, optimize_for_inference
from ._onnx import ONNX_EXPORTERS as _ONNX_EXPORTERS  # noqa: F401  (tests swap exporters in it)
from ._onnx import export_onnx
from ._torchscript import export_torchscript
from ._verify import (RTOL, TOLERANCE, VERIFY_BATCHES, ExportError, MissingDependency, compare_outputs, describe_check,
                      mismatch, tolerance)
from ._weights import WeightsError, check_state_dict, fit_spec_to_weights, initialized_model, load_weights

__all__ = [
    "ExportError",
    "WeightsError",
    "MissingDependency",
    "FORMATS",
    "TOLERANCE",
    "RTOL",
    "tolerance",
    "compare_outputs",
    "default_class_name",
    "check_class_name",
    "export_python",
    "write_python",
    "export_onnx",
    "export_torchscript",
    "export",
    "load_weights",
    "fit_spec_to_weights",
    "initialized_model",
    "check_state_dict",
    "fuse_bn",
    "optimize_for_inference",
]

FORMATS = {
    "py": lambda spec, path, class_name=None, **_: write_python(spec, path, class_name),
    "onnx": lambda spec, path, weights=None, resolution=None, opset=None, **_: export_onnx(
        spec, path, weights=weights, resolution=resolution, opset=opset),
    "torchscript": lambda spec, path, weights=None, resolution=None, **_: export_torchscript(
        spec, path, weights=weights, resolution=resolution),
}
"""Format name -> exporter(spec, path, **options) -> report dict."""


def export(spec, fmt: str, path: str | os.PathLike, **options) -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return FORMATS[fmt](spec, path, **options)
