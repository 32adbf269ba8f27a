"""The MnasNet reward, and the map that turns a proxy score into an accuracy-like number.

MnasNet (Tan et al. 2019, Eq. 2) scores a model m by::

    reward(m) = ACC(m) * (C(m) / T) ** w,    w = alpha if C(m) <= T else beta

where C is the cost (latency on the phone in MnasNet, FLOPs in EfficientNet) and
T the target.  ``soft``: alpha = beta = -0.07 (a model twice as costly must be
about 5 % more accurate to score the same: 2 ** -0.07 = 0.953); ``hard``:
alpha = 0, beta = -1 (no bonus below the target, a steep penalty above it).

``absolute`` is TuNAS's reward (Bender et al. 2020, "Can weight sharing outperform
random architecture search?", Eq. 1)::

    reward(m) = ACC(m) + beta * |C(m) / T - 1|,    beta < 0

It peaks at the target: below it the penalty pulls the search up, above it every
+10 % of cost costs 0.1 * |beta| of accuracy, so unlike the soft reward the target
moves the argmax.  TuNAS's mobile search used beta = -0.10; the default here,
:data:`ABSOLUTE_BETA` = -0.5, is set from the measured seed noise of the default
estimator (see its comment).

Doctest (B0 at a 400M target, soft)::

    >>> r = Reward.make(400e6, "flops", "soft")
    >>> round(r(0.771, 401_659_392), 6)
    0.770777
    >>> Reward.make(400e6, "flops", "hard")(0.5, 800e6)
    0.25
    >>> Reward.make(400e6, "flops", "absolute", w=-0.1)(0.5, 440e6)
    0.49

A training-free proxy (synflow, ...) is not an accuracy: its values are log-scale,
may be negative and are only meaningful *relative* to other architectures.  The
product with (C/T)^w needs a positive number whose relative changes mean what
relative accuracy changes mean, so :class:`ProxyMap` maps a proxy score ``s`` to

    acc_like(s) = sigmoid(logit(p_ref) + (s - s_ref) / scale)

a fixed, monotone, saturating map anchored at a reference architecture
(EfficientNet-B0: ``s_ref`` measured by the same proxy in the same run, ``p_ref``
= 0.771, B0's published ImageNet top-1).  ``scale`` is calibrated on a fixed,
seeded sample of the space, also measured in the run: with ``b`` the least-squares
slope of the proxy against ln(cost) over the sample, ``scale = (1 - p_ref) * b /
0.07``, so that *at B0* the mapped proxy trades accuracy for cost exactly as the
soft reward does (d ln acc / d ln C = 0.07: twice the cost for ~5 % relative
accuracy, MnasNet's empirical rule, and the assumption under which EfficientNet
searched with w = -0.07 at T = 400M around B0).  Away from B0 the logistic
saturates, like real accuracy.  If the proxy does not grow with cost (b <= 0),
``scale`` falls back to the proxy's standard deviation over the sample.

Note that with alpha = beta (soft) the target only multiplies the reward by a
constant T^-w: it does not move the argmax.  Where the soft search lands is set by
the accuracy model's own cost elasticity, which is why the map is calibrated at B0.

The map preserves the proxy's ranking; it does not make the proxy an accuracy,
and a "proxy reward" is a prediction of the trade-off, not a measurement of it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CONSTRAINTS", "METRICS", "Reward", "ProxyMap", "IdentityMap", "B0_TOP1", "ELASTICITY", "ABSOLUTE_BETA"]

# TuNAS's absolute reward: accuracy lost per unit of relative distance from the target.
# |beta| * 0.1 is what a candidate 10 % off target pays; it must exceed the seed noise of
# the accuracy estimate, or noise decides whether the search lands inside +-10 %.  The
# default estimator's seed sd is ~0.025 (pooled over architectures; the difference of two
# estimates ~0.036, results/evaluation/estimator_noise.json), so TuNAS's -0.10 (a 0.01 step)
# would leave the landing to noise; -0.5 makes the 10 % step 0.05.
ABSOLUTE_BETA = -0.5

# constraint -> (alpha, beta); for "absolute" both are the one beta of TuNAS's reward
CONSTRAINTS: dict[str, tuple[float, float]] = {"soft": (-0.07, -0.07), "hard": (0.0, -1.0),
                                               "absolute": (ABSOLUTE_BETA, ABSOLUTE_BETA)}
METRICS = ("flops", "latency")
B0_TOP1 = 0.771  # EfficientNet-B0 ImageNet top-1 (Tan & Le 2019, Table 2): the proxy map's anchor
ELASTICITY = 0.07  # |w| of the soft reward: the accuracy-cost trade-off the proxy map has at B0


@dataclass(frozen=True)
class Reward:
    """ACC * (C/T)^w with w = alpha below or at the target, beta above it (MnasNet's soft and hard);
    ACC + beta * |C/T - 1| for ``constraint="absolute"`` (TuNAS).  Without a target (``None``) the
    reward is the accuracy alone: a search that maximizes accuracy (e.g. on a benchmark table)."""

    target: float | None
    metric: str = "flops"
    alpha: float = -0.07
    beta: float = -0.07
    constraint: str = "soft"

    def __post_init__(self):
        if self.target is not None and not (isinstance(self.target, (int, float)) and math.isfinite(self.target)
                                            and self.target > 0):
            raise ValueError(f"target must be a positive number, got {self.target!r}")
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        for n in ("alpha", "beta"):
            v = getattr(self, n)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise ValueError(f"{n} must be a finite number, got {v!r}")
        if self.constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {self.constraint!r}")
        if self.constraint == "absolute" and not (self.beta < 0 and self.alpha == self.beta):
            raise ValueError(f"the absolute reward needs one negative beta (a penalty), got {self.beta!r}")

    @classmethod
    def make(cls, target: float | None, metric: str = "flops", constraint: str = "soft",
             w: float | None = None) -> "Reward":
        """``constraint`` soft|hard|absolute sets (alpha, beta); ``w`` (if given) overrides both.
        ``target`` None: the accuracy alone."""
        if constraint not in CONSTRAINTS:
            raise ValueError(f"constraint must be one of {', '.join(CONSTRAINTS)}, got {constraint!r}")
        alpha, beta = CONSTRAINTS[constraint]
        if w is not None:
            alpha = beta = float(w)
        return cls(None if target is None else float(target), metric, alpha, beta, constraint)

    def weight(self, cost: float) -> float:
        return self.alpha if cost <= self.target else self.beta

    def __call__(self, accuracy: float, cost: float) -> float:
        if self.target is None:
            return float(accuracy)
        if not cost > 0:
            raise ValueError(f"cost must be positive, got {cost!r}")
        if self.constraint == "absolute":
            return float(accuracy) + self.beta * abs(float(cost) / self.target - 1.0)
        return float(accuracy) * (float(cost) / self.target) ** self.weight(cost)

    def to_dict(self) -> dict:
        return {"target": self.target, "metric": self.metric, "constraint": self.constraint,
                "alpha": self.alpha, "beta": self.beta}


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@dataclass(frozen=True)
class IdentityMap:
    """The training estimator already yields an accuracy."""

    kind: str = "identity"

    def __call__(self, score: float) -> float:
        return float(score)

    def to_dict(self) -> dict:
        return {"kind": self.kind}


@dataclass(frozen=True)
class ProxyMap:
    """acc_like(s) = sigmoid(logit(p_ref) + (s - s_ref) / scale): monotone, in (0, 1)."""

    reference_score: float
    scale: float
    reference_accuracy: float = B0_TOP1
    slope: float | None = None  # proxy units per e-fold of cost in the calibration sample (informative)
    kind: str = "proxy-logistic"

    def __post_init__(self):
        if not (math.isfinite(self.reference_score) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"ProxyMap needs a finite reference score and a positive scale, got "
                             f"{self.reference_score!r}, {self.scale!r}")
        if not 0 < self.reference_accuracy < 1:
            raise ValueError("reference_accuracy must be in (0, 1)")

    @classmethod
    def fit(cls, reference_score: float, sample_scores, sample_costs=None, reference_accuracy: float = B0_TOP1,
            elasticity: float = ELASTICITY) -> "ProxyMap":
        """Calibrate ``scale`` on a sample of (score, cost) pairs (see the module docstring)."""
        scores = list(sample_scores)
        costs = list(sample_costs) if sample_costs is not None else [None] * len(scores)
        pairs = [(float(s), float(c) if c is not None else None) for s, c in zip(scores, costs)
                 if s is not None and math.isfinite(s)]
        xs = [s for s, _ in pairs]
        sd = _std(xs)
        slope = 0.0
        with_cost = [(math.log(c), s) for s, c in pairs if c is not None and c > 0 and math.isfinite(c)]
        if len(with_cost) >= 3:
            mx = sum(x for x, _ in with_cost) / len(with_cost)
            my = sum(y for _, y in with_cost) / len(with_cost)
            sxx = sum((x - mx) ** 2 for x, _ in with_cost)
            if sxx > 0:
                slope = sum((x - mx) * (y - my) for x, y in with_cost) / sxx
        if slope > 0:
            scale = (1 - reference_accuracy) * slope / elasticity
        else:
            scale = sd if sd > 0 else 1.0
        return cls(float(reference_score), scale, reference_accuracy, slope=slope)

    def __call__(self, score: float) -> float:
        p = self.reference_accuracy
        return _sigmoid(math.log(p / (1 - p)) + (float(score) - self.reference_score) / self.scale)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "reference_score": self.reference_score, "scale": self.scale,
                "reference_accuracy": self.reference_accuracy, "slope_per_ln_cost": self.slope}


def _std(xs: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
