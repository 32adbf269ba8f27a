"""nas: neural architecture search for small, fast CNNs, the EfficientNet way.

The public API is flat; heavy modules (torch, fvcore) load only when first used::

    import nas
    spec = nas.load_spec("efficientnet-b3")   # preset name, path, JSON string or dict
    model = nas.build_model(spec)             # torch.nn.Module
    c = nas.cost(spec)                        # c.params, c.flops, c.stages
    spec.save("b3.json")                      # atomic write
"""
from __future__ import annotations

import importlib

from .cost import cost  # torch-free; bound eagerly so `nas.cost` is the function even after `import nas.cost`
from .presets import load_preset, load_spec, preset_names
from .spec import Spec, SpecError, Stage

__version__ = "0.1.0"

__all__ = ["Spec", "Stage", "SpecError", "load_spec", "load_preset", "preset_names", "build_model", "cost",
           "__version__"]

_LAZY = {"build_model": ("nas.build", "build_model")}


def __getattr__(name):  # PEP 562: keep `import nas` free of torch
    if name in _LAZY:
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
