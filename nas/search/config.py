"""What a search is asked to do, by concern: the search itself, its estimator, latency, storage.

The defaults are ``nas-search``'s defaults (the command builds one of these from
its flags), and the configuration travels as plain data (:meth:`SearchConfig.to_dict`
and :meth:`SearchConfig.from_dict`) to the processes that rebuild the search's
session (local workers, Ray trials).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..reward import Reward

__all__ = ["SearchConfig", "EstimatorConfig", "LatencyConfig", "StorageConfig", "DEFAULT_BUDGET", "TRAIN_BUDGET",
           "CALIBRATION_SAMPLES", "SUPERNET_BUDGET", "default_budget"]

DEFAULT_BUDGET = 200  # trials; with proxy:synflow at 1 thread about 2-3 minutes on 2 cores (results/search/README.md)
TRAIN_BUDGET = 30  # the CLI default with the training estimator: ~6.5 minutes on 2 cores (results/search/default)
SUPERNET_BUDGET = 60  # with a trained supernet: ~3-7 s per member (BN recalibration + held-out pass)
CALIBRATION_SAMPLES = 24  # seeded space members measured to set the proxy map's scale


def default_budget(estimator: str) -> int:
    """Complete trials when none is given: training costs seconds per trial, a proxy a fraction of one."""
    if estimator == "supernet" or estimator.startswith("supernet:"):
        return SUPERNET_BUDGET
    return TRAIN_BUDGET if estimator == "train" else DEFAULT_BUDGET


@dataclass(frozen=True)
class EstimatorConfig:
    """How each architecture is scored: a name of :data:`nas.estimators.ESTIMATORS` and its options.

    ``options`` holds only what the user set (e.g. ``{"epochs": 2, "recipe": "adamw"}``);
    the estimator's own defaults fill the rest, and an option it does not take fails
    when the estimator is made.  ``factory`` (``"module:function"``, called with no
    arguments) replaces the registry in every process: how tests and benchmarks hand
    a cheap estimator to worker processes; ``name`` still names the study.
    """

    name: str = "train"  # nas.estimators.DEFAULT_ESTIMATOR, which imports torch; a test keeps the two equal
    data: str = "sample"
    options: dict = field(default_factory=dict)
    factory: str | None = None


@dataclass(frozen=True)
class LatencyConfig:
    """Measured batch-1 latency (:class:`nas.latency.LatencyMeter`, the one protocol of
    :class:`nas.latency.Protocol`: pinned, GC off, interleaved rounds, inter-quartile mean), for a latency target."""

    threads: int = 1
    runs: int = 30
    warmup: int = 10
    table: str | None = None  # a nas-latency table: predict instead of measuring (nas.latency.predict)


@dataclass(frozen=True)
class StorageConfig:
    """Where the study and the outputs live.

    ``url``: an Optuna storage URL or ``":memory:"``; None means a journal file in
    the output folder.  ``study_name``: None derives it from the settings.
    """

    url: str | None = None
    study_name: str | None = None
    output: str | None = None


_NESTED = {"estimator": EstimatorConfig, "latency": LatencyConfig, "storage": StorageConfig}


@dataclass(frozen=True)
class SearchConfig:
    target: float | None  # FLOPs or seconds, as ``metric`` says; None: maximize accuracy (no cost in the reward)
    metric: str = "flops"  # flops | latency
    constraint: str = "absolute"  # TuNAS's reward: the one whose argmax the target moves (nas.reward)
    w: float | None = None
    strategy: str = "tpe"
    budget: int = TRAIN_BUDGET  # complete trials; default_budget(estimator) is the CLI's rule
    seed: int = 0
    space: str = "mnasnet-b0"
    calibration_samples: int = CALIBRATION_SAMPLES
    flops_convention: str = "fvcore"  # nas.cost.FLOP_CONVENTIONS: what "flops" counts (conv-linear: NAS-Bench-Macro's)
    estimator: EstimatorConfig = field(default_factory=EstimatorConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def reward(self) -> Reward:
        return Reward.make(self.target, self.metric, self.constraint, self.w)

    def default_study_name(self) -> str:
        t = "max-accuracy" if self.target is None else f"{self.metric}{self.target:g}"
        if self.flops_convention != "fvcore":
            t += f"-{self.flops_convention}"
        return f"{self.space}-{self.strategy}-s{self.seed}-{self.estimator.name}-{t}-{self.constraint}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        """The inverse of :meth:`to_dict`; an unknown key is an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown search setting(s): {', '.join(unknown)}")
        return cls(**{k: (_NESTED[k](**v) if k in _NESTED and isinstance(v, dict) else v) for k, v in d.items()})
