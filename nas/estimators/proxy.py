"""The training-free estimators ``proxy:<name>``: one proxy of :data:`nas.proxies.PROXIES` on one minibatch."""
from __future__ import annotations

import time
from typing import Callable

from ..spec import Spec
from .types import Estimate, failure_reason

__all__ = ["ProxyEstimator", "PROXY_RESOLUTION"]

PROXY_RESOLUTION = 32  # proxies run at a reduced resolution; FLOPs are counted at the spec's own


class ProxyEstimator:
    kind = "proxy"

    def __init__(self, proxy: str, dataset, *, resolution: int | None = None, seed: int = 0, batch_size: int = 64):
        from ..proxies import PROXIES

        if proxy not in PROXIES:
            raise KeyError(f"unknown proxy {proxy!r}; proxies: {', '.join(PROXIES)}")
        self.proxy, self.dataset, self.seed, self.batch_size = proxy, dataset, seed, batch_size
        self.resolution = int(resolution or PROXY_RESOLUTION)
        self.name = f"proxy:{proxy}"

    def __call__(self, spec: Spec, report: Callable | None = None) -> Estimate:
        import math

        from ..proxies import score_proxy

        t0 = time.perf_counter()
        try:
            v = score_proxy(self.proxy, spec, self.dataset, resolution=self.resolution, batch_size=self.batch_size,
                            seed=self.seed)
        except (RuntimeError, ValueError, MemoryError, FloatingPointError) as e:
            return Estimate(None, self.kind, True, failure_reason(e),
                            seconds=time.perf_counter() - t0)
        if not math.isfinite(v):
            return Estimate(None, self.kind, True, f"{self.proxy} score is {v}", seconds=time.perf_counter() - t0)
        return Estimate(v, self.kind, seconds=time.perf_counter() - t0)

    def describe(self) -> dict:
        return {"name": self.name, "resolution": self.resolution, "seed": self.seed, "batch_size": self.batch_size}
