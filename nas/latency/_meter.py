"""Measured inference latency of a spec on this machine (the MnasNet cost, Sec. 3).

Protocol: the materialized model (:func:`nas.build.build_model`) in eval mode
under ``torch.no_grad()``, batch 1 at the spec's own resolution, ``warmup``
untimed runs, then the **median** of ``runs`` timed runs (robust to the other
processes sharing the machine).  ``torch.set_num_threads(threads)`` is fixed for
the measurement (MnasNet measured single-thread on a phone CPU; default 1) and
restored afterwards; the thread count is reported with every result.

Results are cached per spec fingerprint (architecture only) in memory and, when
``cache_path`` is given, in a JSON file keyed by ``fingerprint@threads``, so that
a resumed search does not measure twice.  The file is rewritten atomically.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_text
from ..spec import Spec

__all__ = ["Latency", "LatencyMeter", "measure_latency"]


@dataclass(frozen=True)
class Latency:
    seconds: float  # the median
    threads: int
    runs: int
    resolution: int

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "threads": self.threads, "runs": self.runs, "resolution": self.resolution}


def measure_latency(spec: Spec, *, threads: int = 1, warmup: int = 3, runs: int = 10) -> Latency:
    """Median seconds of one batch-1 forward pass at ``spec.resolution`` (PyTorch eager on the CPU)."""
    from ._backends import BACKENDS
    from ._build import measure_network

    if threads < 1 or runs < 1 or warmup < 0:
        raise ValueError("threads and runs must be >= 1, warmup >= 0")
    seconds = measure_network(spec, BACKENDS["torch"], threads=threads, warmup=warmup, runs=runs)
    return Latency(seconds, threads, runs, spec.resolution)


class LatencyMeter:
    """``meter(spec) -> seconds``, cached per fingerprint (memory + optional JSON file)."""

    def __init__(self, *, threads: int = 1, warmup: int = 3, runs: int = 10, cache_path: str | os.PathLike | None = None):
        self.threads, self.warmup, self.runs = threads, warmup, runs
        self.cache_path = Path(cache_path) if cache_path else None
        self._cache: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        if not (self.cache_path and self.cache_path.exists()):
            return {}
        try:
            data = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return {}  # a corrupt cache is only a cache: measure again
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, dict) and "seconds" in v}

    def _key(self, spec: Spec) -> str:
        return f"{spec.fingerprint()}@{self.threads}"

    def measure(self, spec: Spec) -> Latency:
        key = self._key(spec)
        hit = self._cache.get(key)
        if hit is not None:
            return Latency(float(hit["seconds"]), int(hit["threads"]), int(hit["runs"]), int(hit["resolution"]))
        lat = measure_latency(spec, threads=self.threads, warmup=self.warmup, runs=self.runs)
        self._cache[key] = lat.to_dict()
        if self.cache_path:
            # local workers share the file: keep what the others wrote since this meter read it
            self._cache = {**self._read(), **self._cache}
            atomic_write_text(self.cache_path, json.dumps(self._cache, indent=1, sort_keys=True) + "\n")
        return lat

    def __call__(self, spec: Spec) -> float:
        return self.measure(spec).seconds

    def __len__(self) -> int:
        return len(self._cache)
