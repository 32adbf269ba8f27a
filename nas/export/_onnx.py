"""The ``onnx`` exporter: a verified ONNX file with a dynamic batch axis (see :mod:`nas.export`)."""
from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

from ..atomic import atomic_write_bytes
from . import _verify
from ._verify import VERIFY_BATCHES, ExportError, MissingDependency, compare_outputs, mismatch, verification_inputs
from ._weights import model_to_export

__all__ = ["export_onnx", "ONNX_EXPORTERS"]


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MissingDependency(f"ONNX export needs onnx and onnxruntime ({e.name or e} is not installed): "
                                f"pip install nas-toolkit[export]") from None
    return onnx, onnxruntime


def _onnx_legacy(model, x, opset, tmpdir) -> bytes:
    import torch

    path = os.path.join(tmpdir, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice about the TorchScript-based exporter
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          do_constant_folding=True)
    if len(os.listdir(tmpdir)) > 1:  # weights went to external data files: the 2 GB protobuf limit
        raise ExportError("the model is too large for a single ONNX file (over 2 GB of weights)")
    return Path(path).read_bytes()


def _onnx_dynamo(model, x, opset, tmpdir) -> bytes:
    import contextlib
    import logging

    import torch

    # The dynamo exporter prints progress to stdout and logs warnings (e.g. about torchvision
    # ops) to stderr; a command's output must stay one line.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                                        opset_version=opset, verbose=False)
    finally:
        logger.setLevel(level)
    return program.model_proto.SerializeToString()


ONNX_EXPORTERS = {
    # Legacy first: fast (about 1 s for B0 here), no onnxscript, and it keeps BN in eval mode
    # (the dynamo exporter has open reports of BN left in training mode and wrong conv bias shapes).
    "torchscript (legacy)": _onnx_legacy,
    "dynamo": _onnx_dynamo,
}


def export_onnx(spec, path: str | os.PathLike, weights=None, resolution: int | None = None,
                opset: int | None = None, exporter: str | None = None) -> dict:
    """Export ``spec`` (with ``weights``: a path or a state_dict) to ONNX with a dynamic batch axis.

    The file is checked with ``onnx.checker``, run in onnxruntime at batch 1 and 3
    and compared with PyTorch; it is written (atomically) only when every output is
    within :func:`tolerance` of PyTorch's.  ``exporter`` picks one of
    ``"torchscript (legacy)"`` or ``"dynamo"``; by default the legacy exporter is
    tried first and dynamo is the fallback.  Returns a report dict.
    """
    onnx, ort = _require_onnx()  # first: a missing package fails before any work
    import torch

    spec, model, resolution, source = model_to_export(spec, weights, resolution)
    xs = verification_inputs(spec, resolution)
    with torch.no_grad():
        refs = [model(x).numpy() for x in xs]
    names = [exporter] if exporter else list(ONNX_EXPORTERS)
    if exporter is not None and exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; one of {', '.join(ONNX_EXPORTERS)}")
    failures = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="nas-export-") as tmp:
            try:
                data = ONNX_EXPORTERS[name](model, xs[0], opset, tmp)
                proto = onnx.load_from_string(data)
                onnx.checker.check_model(proto)
                sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
                iname = sess.get_inputs()[0].name
                outs = [sess.run(None, {iname: x.numpy()})[0] for x in xs]
                cmp = compare_outputs("onnxruntime", refs, outs)
            except ExportError as e:
                failures.append(f"{name}: {e}")
                continue
            except Exception as e:  # an exporter crash: try the next exporter, report all
                failures.append(f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
                continue
        if not cmp["within"]:
            failures.append(f"{name}: {mismatch('onnxruntime', cmp)}")
            continue
        atomic_write_bytes(path, data)
        used_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return {"format": "onnx", "path": str(path), "weights": source, "exporter": name, "opset": used_opset, "resolution": resolution,
                "batch_sizes": list(VERIFY_BATCHES), "max_abs_diff": cmp["max_abs_diff"],
                "max_rel_diff": cmp["max_rel_diff"], "max_abs_output": cmp["max_abs_output"],
                "atol": _verify.TOLERANCE, "rtol": _verify.RTOL, "bytes": len(data), "onnxruntime": ort.__version__}
    raise ExportError("ONNX export failed, nothing written: " + "; ".join(failures))
