"""One way to name the device a command runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

``auto`` picks the first CUDA device when one is present, else the CPU.  Asking
for CUDA where there is none is a :class:`DeviceError` (the commands turn it into
one line and exit 2), never a silent fall-back to the CPU.
"""
from __future__ import annotations

import re

__all__ = ["DEVICE_CHOICES", "DeviceError", "resolve_device"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class DeviceError(ValueError):
    """The requested device does not exist here, or the name is not a device."""


def resolve_device(name: str = "auto"):
    """``"auto" | "cpu" | "cuda" | "cuda:N"`` -> ``torch.device``."""
    import torch

    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise DeviceError(f"unknown device {name!r}; use {DEVICE_CHOICES}")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceError(f"device {name!r}: no CUDA device is available on this machine (torch {torch.__version__}, "
                          f"{build}); use --device cpu or auto")
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
