"""The supernet checkpoint: one versioned file, ``DIR/supernet.pt``, written atomically.

A dict read with ``torch.load(weights_only=True)`` (tensors and plain data only)::

    format "nas-supernet", version 1
    space        the search space's name (search_spaces.SPACES)
    skeleton     the space's skeleton spec as a dict (a changed skeleton makes the file stale)
    num_classes, classes, in_channels
    config       the training settings (TrainConfig as a dict); a resume must match them
    step, total_steps, steps_per_epoch, complete
    history      one entry per finished epoch
    train_seconds, peak_rss_mb
    model        the supernet's state dict
    optimizer    the optimizer's state (dropped once training is complete)
    torch_rng    the CPU generator state (dropout draws), so a resumed run repeats an uninterrupted one
"""
from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path

import torch

from search_spaces import SPACES

from ..atomic import atomic_write_bytes
from ._net import Supernet, SupernetError

__all__ = ["FORMAT", "VERSION", "CHECKPOINT", "save_checkpoint", "read_checkpoint", "load_supernet"]

FORMAT = "nas-supernet"
VERSION = 1
CHECKPOINT = "supernet.pt"
_REQUIRED = ("space", "skeleton", "num_classes", "classes", "in_channels", "config", "step", "total_steps",
             "steps_per_epoch", "complete", "history", "train_seconds", "model")


def save_checkpoint(path: str | Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_failure(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few whole words (torch's text is a page)."""
    text = str(e)
    hostile = re.search(r"GLOBAL ([\w.]+)", text)
    if hostile:
        return f"it asks to run Python object {hostile.group(1)}; only tensors and plain data are read"
    if isinstance(e, pickle.UnpicklingError) or "Unpickl" in text:
        return "its pickled data is not a checkpoint's"
    return "truncated, or not a file written by torch.save"


def _checkpoint_path(where: str | Path) -> Path:
    p = Path(where)
    return p / CHECKPOINT if p.is_dir() or not p.suffix else p


def read_checkpoint(where: str | Path) -> dict:
    """The validated checkpoint dict of a supernet folder (or file); SupernetError with one line otherwise."""
    path = _checkpoint_path(where)
    if not path.is_file():
        raise SupernetError(f"{where}: no supernet checkpoint ({CHECKPOINT}) found")
    try:
        with warnings.catch_warnings():  # torch's own warnings about the file would leak onto stderr
            warnings.simplefilter("ignore")
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, not a torch file, forbidden pickle content: all mean corrupt
        raise SupernetError(f"{path}: corrupt or unreadable supernet checkpoint ({load_failure(e)})") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise SupernetError(f"{path}: not a supernet checkpoint (format is not {FORMAT!r})")
    if ck.get("version") != VERSION:
        raise SupernetError(f"{path}: unsupported supernet checkpoint version {ck.get('version')!r} "
                            f"(this toolkit reads {VERSION})")
    missing = [k for k in _REQUIRED if k not in ck]
    if missing:
        raise SupernetError(f"{path}: corrupt supernet checkpoint (missing {', '.join(missing)})")
    return ck


def load_supernet(where: str | Path, device: str | torch.device = "cpu") -> tuple[Supernet, dict]:
    """(supernet in eval mode, checkpoint metadata without the tensors) from a folder written by training."""
    ck = read_checkpoint(where)
    name = ck["space"]
    if name not in SPACES:
        raise SupernetError(f"{where}: supernet of unknown space {name!r}; spaces: {', '.join(SPACES)}")
    space = SPACES[name]
    if ck["skeleton"] != space.base.to_dict():
        raise SupernetError(f"{where}: the supernet was trained on another version of space {name}'s skeleton")
    config = ck["config"] if isinstance(ck["config"], dict) else {}
    net = Supernet(space, num_classes=int(ck["num_classes"]), plain_bn=bool(config.get("plain_bn", False)))
    try:
        net.load_state_dict(ck["model"], strict=True)
    except RuntimeError as e:
        raise SupernetError(f"{where}: checkpoint weights do not fit space {name}: "
                            f"{' '.join(str(e).split())[:200]}") from None
    meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer", "torch_rng")}
    return net.to(device).eval(), meta
