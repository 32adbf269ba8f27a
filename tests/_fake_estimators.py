"""Cheap, deterministic estimators for the scale-out and reliability tests.

They are referenced as ``"_fake_estimators:<factory>"`` (``EstimatorConfig.factory``)
by worker processes (``nas.search.workers`` / ``nas.search.ray_backend`` rebuild the
session from its configuration), so tests put this folder on ``PYTHONPATH``.  Scores come from the analytic parameter count, so a
trial costs milliseconds and no torch model is built.
"""
from __future__ import annotations

import math
import os
import time

from nas.estimators import Estimate

REFERENCE_FINGERPRINTS: set[str] = set()


def _refs() -> set[str]:
    if not REFERENCE_FINGERPRINTS:
        from nas.presets import load_preset

        REFERENCE_FINGERPRINTS.update(load_preset(n).fingerprint() for n in ("efficientnet-b0", "mobilenet-v2"))
    return REFERENCE_FINGERPRINTS


class ParamsEstimator:
    """score = log(params); never fails.  ``delay`` seconds per trial (to give a kill time to land)."""

    kind = "proxy"
    name = "fake:params"

    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.calls: list[str] = []

    def score(self, spec) -> float:
        from nas.cost import cost

        return math.log(cost(spec).params)

    def __call__(self, spec, report=None) -> Estimate:
        self.calls.append(spec.fingerprint())
        if self.delay and report is not None:
            time.sleep(self.delay)
        return Estimate(self.score(spec), self.kind, seconds=0.001)

    def describe(self) -> dict:
        return {"name": self.name}


class FlakyEstimator(ParamsEstimator):
    """Fails on about 40 % of architectures, in the three ways a real trial fails.

    Bucket by fingerprint (so the same architecture always fails the same way):
    0 raises RuntimeError (an estimator bug), 1 reports a NaN loss, 2 reports out
    of memory, 3 raises MemoryError.  The references never fail (the engine needs
    B0's score); without a ``report`` hook (calibration) nothing raises.
    """

    name = "fake:flaky"

    def __call__(self, spec, report=None) -> Estimate:
        fp = spec.fingerprint()
        self.calls.append(fp)
        bucket = int(fp, 16) % 10
        if fp in _refs():
            bucket = 9
        if bucket in (0, 3) and report is None:
            # the calibration pass (and multi-objective trials) call without a hook; the engine's
            # contract is that estimators do not raise there, so report the failure instead
            return Estimate(None, self.kind, True, "estimator bug: boom")
        if bucket == 0:
            raise RuntimeError("estimator bug: boom")
        if bucket == 1:
            return Estimate(None, self.kind, True, "training diverged: loss is nan at step 3")
        if bucket == 2:
            return Estimate(None, self.kind, True, "RuntimeError: out of memory (CPU): tried to allocate 9 GiB")
        if bucket == 3:
            raise MemoryError()
        return Estimate(self.score(spec), self.kind, seconds=0.001)


class AlwaysFailEstimator(ParamsEstimator):
    """Every searched architecture fails (references and calibration still score)."""

    name = "fake:always-fail"

    def __call__(self, spec, report=None) -> Estimate:
        self.calls.append(spec.fingerprint())
        if report is None or spec.fingerprint() in _refs():
            return Estimate(self.score(spec), self.kind)
        return Estimate(None, self.kind, True, "diverged: loss is nan")


def params():
    return ParamsEstimator()


def slow_params():
    return ParamsEstimator(delay=float(os.environ.get("NAS_TEST_DELAY", "0.3")))


def flaky():
    return FlakyEstimator()


def always_fail():
    return AlwaysFailEstimator()


def broken():
    raise RuntimeError("cannot build the estimator")


def fast_tmp_dir(tmp_path, name: str = "run"):
    """A fresh folder on tmpfs when there is one: the journal storage fsyncs every write
    (42 parameters per trial), which costs 5-50 ms each on this shared disk."""
    import pathlib
    import shutil
    import tempfile

    shm = pathlib.Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        d = pathlib.Path(tempfile.mkdtemp(prefix=f"nas-test-{name}-", dir=shm))
        return d, (lambda: shutil.rmtree(d, ignore_errors=True))
    d = tmp_path / name
    d.mkdir()
    return d, (lambda: None)


class EpochsEstimator(ParamsEstimator):
    """A training-like estimator: reports an accuracy per epoch through ``report`` (multi-fidelity hook)
    and stops early (pruned) when the hook says so."""

    kind = "train"
    name = "fake:epochs"
    epochs = 4

    def __call__(self, spec, report=None) -> Estimate:
        self.calls.append(spec.fingerprint())
        final = 1 / (1 + math.exp(-(self.score(spec) - 15.0)))  # accuracy-like, in (0, 1)
        acc = final
        for epoch in range(1, self.epochs + 1):
            acc = final * epoch / self.epochs
            time.sleep(0.05)
            if report is not None and report(epoch, acc):
                return Estimate(acc, self.kind, pruned=True)
        return Estimate(acc, self.kind)


def epochs():
    return EpochsEstimator()
