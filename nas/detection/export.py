"""ONNX export of a detector's raw per-level outputs, verified in onnxruntime before it is written.

Outputs ``class_p{l}`` and ``box_p{l}`` for every level ``l`` (``[B, A*C, H, W]`` and
``[B, A*4, H, W]``), dynamic batch.  As for classifiers (:func:`nas.export.export_onnx`):
exported from ``eval()`` with seeded, BN-calibrated weights unless a state dict is
given, run at batch 1 and 3, and written atomically only when every output is
within :func:`nas.export.tolerance` of PyTorch's (``TOLERANCE + RTOL * max|output|``,
the classifiers' rule).  Anchor decoding and NMS stay
outside the graph (:mod:`nas.detection.postprocess`).
"""
from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from ..export import RTOL, TOLERANCE, ExportError, MissingDependency, compare_outputs, mismatch
from ..atomic import atomic_write_bytes
from .spec import DetectorSpec

__all__ = ["export_detector_onnx", "output_names"]

VERIFY_BATCHES = (1, 3)  # 3, not 2: a batch of 2 hides some axis mix-ups


def output_names(spec: DetectorSpec) -> list[str]:
    levels = range(spec.levels.min, spec.levels.max + 1)
    return [f"class_p{lvl}" for lvl in levels] + [f"box_p{lvl}" for lvl in levels]


def _flat(model):
    """The detector with a flat tuple of outputs (class per level, then box per level), as ONNX wants."""
    import torch

    class Flat(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            cls_out, box_out = self.m(x)
            return tuple(cls_out) + tuple(box_out)

    return Flat(model)


def export_detector_onnx(spec: DetectorSpec, path: str | os.PathLike, weights=None, resolution: int | None = None,
                         opset: int | None = None) -> dict:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        raise MissingDependency(f"ONNX export needs onnx and onnxruntime ({e.name or e} is not installed): "
                                f"pip install nas-toolkit[export]") from None
    import torch

    from .build import build_detector

    res = spec.resolution if resolution is None else resolution
    largest = 1 << spec.levels.max
    if res % largest:
        raise ValueError(f"resolution must be a multiple of the largest stride {largest}, got {res}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_detector(spec)
    if weights is None:
        # Calibrated BN: with the raw init every layer shrinks its input and a comparison of near-zero
        # outputs could not fail.
        from ..bn import recalibrate_bn

        cal = min(res, 256)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            recalibrate_bn(model, [torch.randn(8, spec.backbone.in_channels, cal, cal)])
        source = "initialised (seed 0, BN statistics calibrated on one random batch)"
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True) if not isinstance(weights, dict) else weights
        model.load_state_dict(state, strict=True)
        source = str(weights) if not isinstance(weights, dict) else "state_dict"
    model.eval()
    flat = _flat(model).eval()
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(b, spec.backbone.in_channels, res, res, generator=g) for b in VERIFY_BATCHES]
    with torch.no_grad():
        refs = [[o.numpy() for o in flat(x)] for x in xs]
    names = output_names(spec)
    with tempfile.TemporaryDirectory(prefix="nas-export-") as tmp:
        out = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(flat, (xs[0],), out, dynamo=False, input_names=["input"], output_names=names,
                              dynamic_axes={n: {0: "batch"} for n in ["input", *names]}, opset_version=opset,
                              do_constant_folding=True)
        if len(os.listdir(tmp)) > 1:
            raise ExportError("the model is too large for a single ONNX file (over 2 GB of weights)")
        data = Path(out).read_bytes()
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    cmp = compare_outputs("onnxruntime", [r for ref in refs for r in ref],
                          [o for x in xs for o in sess.run(names, {"input": x.numpy()})], labels=names * len(xs))
    if not cmp["within"]:
        raise ExportError(f"{mismatch('onnxruntime', cmp)}; nothing written")
    atomic_write_bytes(path, data)
    used_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"format": "onnx", "path": str(path), "weights": source, "exporter": "torchscript (legacy)",
            "opset": used_opset, "resolution": res, "batch_sizes": list(VERIFY_BATCHES), "outputs": names,
            "num_anchors": spec.num_anchors(res), "max_abs_diff": cmp["max_abs_diff"],
            "max_rel_diff": cmp["max_rel_diff"], "max_abs_output": cmp["max_abs_output"], "atol": TOLERANCE,
            "rtol": RTOL, "bytes": len(data), "onnxruntime": ort.__version__}
