"""Scoring a member by inheritance: extract its weights, recalibrate BN, measure held-out accuracy.

Recalibration is not optional: the supernet's running statistics are an average over
every member it trained, and a member evaluated with them scores near chance (the
most common one-shot mistake; measured: 0.10 without, results/supernet/diagnosis.json).  The
statistics are recomputed as exact
averages over a *fixed* set of training images (the same images for every member,
so that members differ only in architecture), in train-mode BN with dropout and drop
connect off (:func:`nas.train.recalibrate_bn`).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Callable

import torch

from ..build import build_model
from ..estimators.types import Estimate
from ..atomic import atomic_write_text
from ..spec import Spec
from ..train import MEMORY_FORMAT, evaluate, recalibrate_bn
from ._checkpoint import load_supernet
from ._net import Member, Supernet, SupernetError

__all__ = ["DEFAULT_CALIBRATION_IMAGES", "calibration_batches", "inherit", "SupernetEstimator", "score_report",
           "save_extracted"]

# Once-for-All recalibrates on 2,000 training images; SPOS on 25,600.  (How many this
# task needs: docs/supernet.md.)
DEFAULT_CALIBRATION_IMAGES = 2000
CALIBRATION_SEED = 12345  # one fixed draw, independent of the training seed


def _to(batches, device):
    for x, y in batches:
        yield x.to(device), y.to(device)


def calibration_batches(dataset, *, resolution: int, channels: int, images: int, batch_size: int = 64) -> list:
    """A fixed, stratified set of ``images`` training images as a list of batches."""
    loader = dataset.loader("train", batch_size=batch_size, resolution=resolution, channels=channels, shuffle=True,
                            seed=CALIBRATION_SEED, limit=images)
    return list(loader)


def inherit(net: Supernet, member: Member, calibration: list | None, device: str | torch.device = "cpu"):
    """``build_model(member.spec)`` holding the member's inherited weights, BN recalibrated on ``calibration``."""
    model = build_model(member.spec)
    model.load_state_dict(net.extract(member), strict=True)
    model = model.to(device, memory_format=MEMORY_FORMAT)  # the layout nas.train evaluates in
    if calibration:
        recalibrate_bn(model, (x.to(device).contiguous(memory_format=MEMORY_FORMAT) for x, _ in calibration))
    return model.eval()


class SupernetEstimator:
    """``est(spec) -> Estimate``: the held-out accuracy of ``spec`` with weights inherited from a trained supernet.

    Takes the estimators' shared factory options; ``epochs``, ``limit_train`` and
    ``recipe`` belong to training and are accepted so that one search configuration
    fits every estimator, but do nothing here.  ``resolution`` defaults to the
    supernet's training resolution.  Scores are cached per spec fingerprint, in
    memory and in ``DIR/scores/`` (keyed by the supernet's step and the scoring
    settings too).
    """

    kind = "supernet"

    def __init__(self, directory: str | Path, dataset, *, resolution: int | None = None, epochs: float | None = None,
                 seed: int = 0, batch_size: int = 64, limit_train: int | None = None, limit_val: int | None = None,
                 recipe: str | None = None, calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
                 device: str = "cpu"):
        self.directory = Path(directory)
        self.name = f"supernet:{directory}"
        self.device = device
        self.net, self.meta = load_supernet(self.directory, device)
        if dataset.num_classes != self.net.num_classes:
            raise SupernetError(f"the supernet in {directory} has {self.net.num_classes} classes, "
                                f"the data {dataset.name} {dataset.num_classes}")
        self.dataset, self.seed, self.batch_size, self.limit_val = dataset, seed, batch_size, limit_val
        self.resolution = int(resolution or self.meta["config"]["resolution"])
        self.calibration_images = int(calibration_images)
        channels = self.net.space.base.in_channels
        self._calibration = calibration_batches(dataset, resolution=self.resolution, channels=channels,
                                                images=self.calibration_images, batch_size=batch_size)
        self._val = dataset.loader("val", batch_size=max(256, batch_size), resolution=self.resolution,
                                   channels=channels, shuffle=False, seed=seed, limit=limit_val)
        settings = {"step": self.meta["step"], "data": dataset.name, "resolution": self.resolution,
                    "calibration_images": self.calibration_images, "limit_val": limit_val, "seed": seed,
                    "batch_size": batch_size}
        self._settings_key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self._cache: dict[str, dict] = {}

    # ------------------------------------------------------------ the estimator interface

    def __call__(self, spec: Spec, report: Callable | None = None) -> Estimate:
        t0 = time.perf_counter()
        try:
            member = self.net.member(spec)
        except SupernetError as e:
            return Estimate(None, self.kind, True, str(e), seconds=time.perf_counter() - t0)
        hit = self._lookup(member.fingerprint())
        if hit is not None:
            return Estimate(hit["accuracy"], self.kind, seconds=time.perf_counter() - t0,
                            details={**hit, "cached": True})
        try:
            _, acc, loss = self._score(member)
        except (RuntimeError, MemoryError) as e:
            return Estimate(None, self.kind, True, f"{type(e).__name__}: {e}".splitlines()[0],
                            seconds=time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        record = {"accuracy": acc, "loss": loss, "seconds": seconds, "calibration_images": self.calibration_images,
                  "resolution": self.resolution, "supernet_step": self.meta["step"]}
        self._store(member.fingerprint(), record)
        return Estimate(acc, self.kind, seconds=seconds, details={**record, "cached": False})

    def describe(self) -> dict:
        return {"name": self.name, "resolution": self.resolution, "calibration_images": self.calibration_images,
                "seed": self.seed, "batch_size": self.batch_size, "limit_val": self.limit_val,
                "supernet_step": self.meta["step"], "supernet_complete": self.meta["complete"],
                "space": self.meta["space"]}

    # ------------------------------------------------------------ weights for a result

    def model(self, spec: Spec):
        """The member as a module (``build_model`` of the member spec) with inherited, recalibrated weights."""
        return inherit(self.net, self.net.member(spec), self._calibration, self.device)

    def state_dict(self, spec: Spec) -> dict:
        """The member's inherited weights with recalibrated BN: loads strictly into ``build_model(member spec)``."""
        return {k: v.detach().cpu().contiguous() for k, v in self.model(spec).state_dict().items()}

    # ------------------------------------------------------------ internals

    def _score(self, member: Member):
        model = inherit(self.net, member, self._calibration, self.device)
        acc, loss = evaluate(model, _to(self._val, self.device))
        return model, acc, loss

    def _cache_file(self, fingerprint: str) -> Path:
        return self.directory / "scores" / f"{fingerprint}-{self._settings_key}.json"

    def _lookup(self, fingerprint: str) -> dict | None:
        if fingerprint in self._cache:
            return self._cache[fingerprint]
        try:
            record = json.loads(self._cache_file(fingerprint).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("accuracy"), float):
            return None
        self._cache[fingerprint] = record
        return record

    def _store(self, fingerprint: str, record: dict) -> None:
        self._cache[fingerprint] = record
        try:
            self._cache_file(fingerprint).parent.mkdir(exist_ok=True)
            atomic_write_text(self._cache_file(fingerprint), json.dumps(record) + "\n")
        except OSError:
            pass  # a read-only supernet folder still scores; only the disk cache is lost


# ---------------------------------------------------------------- what nas-supernet score / extract hand out


def score_report(est: SupernetEstimator, member: Member) -> dict:
    """The member's inherited held-out accuracy with its cost and the scoring settings, as one dict."""
    from ..cost import cost

    e = est(member.spec)
    if e.failed:
        raise SupernetError(f"scoring failed: {e.reason}")
    c = cost(member.spec)
    return {"spec": member.spec.name, "fingerprint": member.fingerprint(), "accuracy": e.score,
            "loss": e.details.get("loss"), "seconds": e.seconds, "cached": e.details.get("cached"),
            "flops": c.flops, "params": c.params, **{k: v for k, v in est.describe().items() if k != "name"},
            "supernet": str(est.directory)}


def save_extracted(est: SupernetEstimator, member: Member, output: str | Path, spec_output: str | Path | None = None,
                   *, recalibrate: bool = True) -> dict:
    """Write the member's inherited weights (a state dict for ``build_model``) and, if asked, the spec they fit
    (its provenance names the supernet); both atomic.  Returns what was written."""
    import io

    from ..atomic import atomic_write_bytes

    state = est.state_dict(member.spec) if recalibrate else est.net.extract(member)
    buf = io.BytesIO()
    torch.save(state, buf)
    spec = member.spec.replace(provenance={**member.spec.provenance,
                                           "weights": {"supernet": str(est.directory), "step": est.meta["step"],
                                                       "recalibrated": recalibrate}})
    atomic_write_bytes(output, buf.getvalue())
    if spec_output is not None:
        atomic_write_text(spec_output, spec.to_json())
    return {"output": str(output), "spec_output": str(spec_output) if spec_output else None, "tensors": len(state),
            "params": sum(int(v.numel()) for k, v in state.items() if not k.endswith("num_batches_tracked")
                          and "running_" not in k),
            "num_classes": spec.num_classes, "in_channels": spec.in_channels, "fingerprint": spec.fingerprint(),
            "recalibrated": recalibrate}
