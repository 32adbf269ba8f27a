"""The ``torchscript`` exporter: a scripted (or traced) module, reloaded and verified (see :mod:`nas.export`)."""
from __future__ import annotations

import io
import os
import warnings

from ..atomic import atomic_write_bytes
from . import _verify
from ._verify import VERIFY_BATCHES, ExportError, compare_outputs, mismatch, verification_inputs
from ._weights import model_to_export

__all__ = ["export_torchscript"]


def export_torchscript(spec, path: str | os.PathLike, weights=None, resolution: int | None = None) -> dict:
    """Script ``spec``'s model (trace if scripting fails), save, reload and compare; write atomically."""
    import torch

    spec, model, resolution, source = model_to_export(spec, weights, resolution)
    xs = verification_inputs(spec, resolution)
    with torch.no_grad():
        refs = [model(x).numpy() for x in xs]
    with warnings.catch_warnings():
        # torch >= 2.10 marks TorchScript deprecated; it still is the format users ask for here.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            scripted, method = torch.jit.script(model), "script"
        except Exception:  # pragma: no cover - our modules are scriptable; tracing keeps odd specs exportable
            warnings.simplefilter("ignore")
            scripted, method = torch.jit.trace(model, xs[0]), "trace"
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        data = buf.getvalue()
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    # optimized_execution(False): skip the profiling executor's warm-up runs (seconds for B0),
    # which only tune speed; the numbers are the same.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        outs = [loaded(x).numpy() for x in xs]
    cmp = compare_outputs("TorchScript", refs, outs)
    if not cmp["within"]:
        raise ExportError(f"TorchScript export failed, nothing written: {mismatch('the reloaded module', cmp)}")
    atomic_write_bytes(path, data)
    return {"format": "torchscript", "path": str(path), "weights": source, "method": method, "resolution": resolution,
            "batch_sizes": list(VERIFY_BATCHES), "max_abs_diff": cmp["max_abs_diff"],
            "max_rel_diff": cmp["max_rel_diff"], "max_abs_output": cmp["max_abs_output"], "atol": _verify.TOLERANCE,
            "rtol": _verify.RTOL, "bytes": len(data)}
