"""Estimators that answer by lookup in a tabular benchmark (:mod:`nas.benchmarks`).

``nas-bench-macro``: a member's ``mean_acc`` in NAS-Bench-Macro's table, as a fraction
(its three CIFAR-10 trainings averaged).  ``nas-bench-macro:sample``: one of the three
trainings' ``test_acc`` instead, drawn from the search's seed and the member's key
(the same seed and key always draw the same training), which is how NASLib-style
studies add a benchmark's real seed noise to a search.  A spec that is not a member
fails by name (``Estimate.failed``, with the benchmark's reason), never an exception.

``Estimate.details`` carries ``benchmark_key`` and the looked-up ``accuracy``, which the
search's trials.csv and summary.json report.
"""
from __future__ import annotations

import random
import time
from typing import Callable

from ..benchmarks import BENCHMARKS
from ..spec import Spec
from .types import Estimate

__all__ = ["BenchmarkEstimator", "MODES", "benchmark_estimators"]

MODES = ("mean", "sample")


class BenchmarkEstimator:
    """Lookup of ``benchmark``'s table; ``mode`` ``mean`` (mean_acc) or ``sample`` (one training's test_acc)."""

    kind = "benchmark"

    def __init__(self, benchmark: str, mode: str = "mean", dataset=None, *, seed: int = 0):
        if benchmark not in BENCHMARKS:
            raise KeyError(f"unknown benchmark {benchmark!r}; benchmarks: {', '.join(BENCHMARKS)}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.benchmark, self.mode, self.seed = benchmark, mode, int(seed)
        self.name = benchmark if mode == "mean" else f"{benchmark}:{mode}"
        self._bench = BENCHMARKS[benchmark]
        self.table = self._bench.load_table()

    def key(self, spec: Spec) -> str:
        """The member's key (:class:`LookupError` naming why a spec is not one)."""
        return self._bench.key_for_spec(spec)

    def accuracy(self, key: str) -> float:
        """The looked-up accuracy of ``key`` as a fraction, in this estimator's mode."""
        rec = self.table[key]
        if self.mode == "mean":
            return rec.accuracy
        return rec.test_acc[self.draw(key)] / 100.0

    def draw(self, key: str) -> int:
        """Which of the three trainings ``sample`` answers for ``key`` under this seed."""
        return random.Random(f"{self.benchmark}:{self.seed}:{key}").randrange(len(self.table[key].test_acc))

    def __call__(self, spec: Spec, report: Callable | None = None) -> Estimate:
        t0 = time.perf_counter()
        try:
            key = self.key(spec)
            acc = self.accuracy(key)
        except LookupError as e:
            return Estimate(None, self.kind, True, str(e).splitlines()[0], seconds=time.perf_counter() - t0)
        return Estimate(acc, self.kind, seconds=time.perf_counter() - t0,
                        details={"benchmark_key": key, "accuracy": acc})

    def describe(self) -> dict:
        return {"name": self.name, "benchmark": self.benchmark, "mode": self.mode, "seed": self.seed}


def benchmark_estimators() -> dict[str, Callable]:
    """Registry entries: ``<benchmark>`` and ``<benchmark>:sample`` for every benchmark, each a factory
    ``factory(dataset, *, seed=0)`` (the dataset is not used: the table answers)."""
    out: dict[str, Callable] = {}
    for name in BENCHMARKS:
        for mode in MODES:
            out[name if mode == "mean" else f"{name}:{mode}"] = _factory(name, mode)
    return out


def _factory(benchmark: str, mode: str) -> Callable:
    def factory(dataset=None, *, seed: int = 0) -> BenchmarkEstimator:
        return BenchmarkEstimator(benchmark, mode, dataset, seed=seed)

    factory.__name__ = f"{benchmark}:{mode}"
    return factory
