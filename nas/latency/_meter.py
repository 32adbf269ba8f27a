"""Measured inference latency of a spec on this machine (the MnasNet cost, Sec. 3).

Protocol: the one protocol (:class:`nas.latency.Protocol`: one thread, pinned to a core, GC off,
``warmup`` untimed runs, ``runs`` timed runs in interleaved rounds, the inter-quartile mean) on the
materialized model (:func:`nas.build.build_model`) in eval mode without autograd, batch 1 at the
spec's own resolution, eager PyTorch on the CPU.  ``torch.set_num_threads(threads)`` is fixed for
the measurement (MnasNet measured single-thread on a phone CPU; default 1) and restored afterwards;
the thread count, the spread and the machine's load are reported with every result.  The first
measurement of a meter warns loudly on stderr when other work is running (:func:`nas.latency.check_load`).

Results are cached per spec fingerprint (architecture only) in memory and, when
``cache_path`` is given, in a JSON file keyed by ``fingerprint@threads`` (an entry counts only when it was measured with the
meter's protocol, recorded beside it), so that a resumed search does not measure twice.  The file is rewritten atomically.  Meters that share a
cache file (a search's local workers) also share a lock beside it (``<cache>.lock``, ``fcntl.flock``):
one measures at a time, so two workers never time-share the one pinned core, and a spec another
worker measured meanwhile is read back instead of measured again.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write_text
from ..spec import Spec

__all__ = ["Latency", "LatencyMeter", "measure_latency"]


@dataclass(frozen=True)
class Latency:
    seconds: float  # the protocol's statistic (the inter-quartile mean by default)
    threads: int
    runs: int
    resolution: int
    spread: float | None = None   # (Q3 - Q1) / median of the timed runs
    protocol: dict | None = field(default=None, compare=False)
    load: dict | None = field(default=None, compare=False)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "threads": self.threads, "runs": self.runs, "resolution": self.resolution,
                "spread": self.spread, "protocol": self.protocol, "load": self.load}


def measure_latency(spec: Spec, *, threads: int = 1, warmup: int = 10, runs: int = 30, protocol=None) -> Latency:
    """Seconds of one batch-1 forward pass at ``spec.resolution`` (PyTorch eager on the CPU), measured with
    ``protocol`` (default: :class:`nas.latency.Protocol` with these counts)."""
    from ._backends import BACKENDS
    from ._build import measure_networks
    from ._protocol import Protocol, load_record

    if threads < 1 or runs < 1 or warmup < 0:
        raise ValueError("threads and runs must be >= 1, warmup >= 0")
    p = protocol or Protocol(threads=threads, warmup=warmup, runs=runs)
    before = load_record()
    (t,), _ = measure_networks([spec], BACKENDS["torch"], p)
    return Latency(t.seconds, p.threads, p.runs, spec.resolution, spread=t.rel_spread, protocol=p.to_dict(),
                   load={"before": before, "after": load_record()})


class LatencyMeter:
    """``meter(spec) -> seconds``, cached per fingerprint (memory + optional JSON file)."""

    def __init__(self, *, threads: int = 1, warmup: int = 10, runs: int = 30,
                 cache_path: str | os.PathLike | None = None, protocol=None):
        from ._protocol import Protocol

        self.protocol = protocol or Protocol(threads=threads, warmup=warmup, runs=runs)
        self.threads, self.warmup, self.runs = self.protocol.threads, self.protocol.warmup, self.protocol.runs
        self._checked = False
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
        if hit is not None and hit.get("protocol") == self.protocol.to_dict():  # else: another protocol, measure again
            return Latency(float(hit["seconds"]), int(hit["threads"]), int(hit["runs"]), int(hit["resolution"]),
                           spread=hit.get("spread"), protocol=hit.get("protocol"), load=hit.get("load"))
        if not self._checked:  # once per meter: a search beside other work measures noise
            from ._protocol import check_load

            self._checked = True
            check_load(allow=True, warn=lambda m: print(f"nas-search: WARNING: {m}", file=sys.stderr))
        with self._lock():
            hit = self._read().get(key) if self.cache_path else None
            if hit is not None and hit.get("protocol") == self.protocol.to_dict():  # another worker measured it
                self._cache[key] = hit
                return self.measure(spec)
            lat = measure_latency(spec, protocol=self.protocol)
            self._cache[key] = lat.to_dict()
            if self.cache_path:
                # local workers share the file: keep what the others wrote since this meter read it
                self._cache = {**self._read(), **self._cache}
                atomic_write_text(self.cache_path, json.dumps(self._cache, indent=1, sort_keys=True) + "\n")
        return lat

    @contextlib.contextmanager
    def _lock(self):
        """Exclusive, machine-wide for meters sharing the cache file; nothing without one."""
        if self.cache_path is None:
            yield
            return
        import fcntl

        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_path.with_name(self.cache_path.name + ".lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def __call__(self, spec: Spec) -> float:
        return self.measure(spec).seconds

    def __len__(self) -> int:
        return len(self._cache)
