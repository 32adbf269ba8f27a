"""The bottom of :mod:`nas.estimators`: what every estimator returns, and nothing it depends on.

Anything that produces estimates (the estimator families here, :mod:`nas.supernet`, a
benchmark table) imports :class:`Estimate` from this module, never from the package,
so that the registry (which knows every family) can sit above all of them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Estimate", "failure_reason"]


@dataclass(frozen=True)
class Estimate:
    score: float | None  # raw: proxy value or accuracy
    kind: str  # "proxy" | "train"
    failed: bool = False
    reason: str | None = None
    pruned: bool = False
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


def failure_reason(e: BaseException) -> str:
    """One line for a failed estimate; a bare MemoryError says what it means."""
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return "out of memory" + (f": {str(e).splitlines()[0]}" if str(e).strip() else "")
    return f"{type(e).__name__}: {e}".splitlines()[0]
