"""Where compound scaling's (alpha, beta, gamma) come from, and the phi lists of a family.

* :func:`default_coefficients`: the paper's, as a user of EfficientNet expects;
* :func:`coefficients_from_file`: the ``best`` point of a grid search's ``grid.json``;
* :func:`resolve_coefficients`: a file or the default, with single overrides, and the
  notes that say which (``nas-scale`` prints them once its work has succeeded);
* :func:`parse_phis`: ``'0-7'``, ``'0,1,2.5'``, ``'0-3,5'`` -> sorted distinct phis.

A bad file or phi list is a :class:`CoefficientsError` whose message names the file or
the item; the caller prefixes the option it came from.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["CoefficientsError", "COEFFICIENT_TOLERANCE", "default_coefficients", "coefficients_from_file",
           "resolve_coefficients", "parse_phis"]

#: how far alpha*beta^2*gamma^2 may be from 2 in a coefficients file (the grid search's default tolerance)
COEFFICIENT_TOLERANCE = 0.1


class CoefficientsError(ValueError):
    """A coefficients file or a phi list that cannot be used (a user error)."""


def default_coefficients() -> tuple[tuple[float, float, float], str]:
    """(alpha, beta, gamma) when none are given: the paper's, as a user of EfficientNet expects."""
    from .compound import PAPER_COEFFICIENTS

    return PAPER_COEFFICIENTS, "the paper's (EfficientNet, Tan & Le 2019)"


def coefficients_from_file(path: str) -> tuple[float, float, float]:
    """The ``best`` (alpha, beta, gamma) of a grid-search result (``nas-scale --grid-search``'s grid.json).

    A missing or unreadable file, a file without ``best``, or coefficients that break the
    constraint (each >= 1, alpha*beta^2*gamma^2 within COEFFICIENT_TOLERANCE of 2) are errors.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CoefficientsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CoefficientsError(f"{path}: is a folder, not a grid.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CoefficientsError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise CoefficientsError(f"{path}: not valid JSON ({e})") from None
    try:
        best = doc["best"]
        abg = tuple(float(best[k]) for k in ("alpha", "beta", "gamma"))
    except (KeyError, TypeError, ValueError):
        raise CoefficientsError(f"{path}: no best alpha/beta/gamma (expected a grid.json of "
                                "nas-scale --grid-search)") from None
    if not all(math.isfinite(v) and v >= 1 for v in abg):
        raise CoefficientsError(f"{path}: alpha, beta, gamma must be finite and >= 1, got "
                                f"{', '.join(f'{v:g}' for v in abg)}")
    c = abg[0] * abg[1] ** 2 * abg[2] ** 2
    if abs(c - 2) > COEFFICIENT_TOLERANCE * 2:
        raise CoefficientsError(f"{path}: alpha*beta^2*gamma^2 = {c:.3g}, not 2 within {COEFFICIENT_TOLERANCE:.0%}")
    return abg  # type: ignore[return-value]


def resolve_coefficients(path: str | None, alpha: float | None, beta: float | None, gamma: float | None
                         ) -> tuple[tuple[float, float, float], list[str]]:
    """The coefficients (from ``path``'s grid.json, else the paper's; each given one overrides) and the
    notes about them (their source; a warning when alpha*beta^2*gamma^2 is far from 2)."""
    given = (alpha, beta, gamma)
    if path:
        (a, b, g), source = coefficients_from_file(path), f"--coefficients {path}"
    else:
        (a, b, g), source = default_coefficients()
    if all(v is not None for v in given):
        source = "--alpha/--beta/--gamma"
    elif any(v is not None for v in given):
        source += " with overrides"
    a, b, g = (v if v is not None else d for v, d in zip(given, (a, b, g)))
    notes = [f"coefficients alpha={a:g} beta={b:g} gamma={g:g} from {source}"]
    c = a * b * b * g * g
    if abs(c - 2) > 0.2:
        notes.append(f"warning: alpha*beta^2*gamma^2 = {c:.3g}, not about 2: FLOPs grow {c:.3g}x per unit of phi")
    return (a, b, g), notes


def parse_phis(text: str) -> list[float]:
    """'0-7' -> [0..7]; '0,1,2.5' -> [0, 1, 2.5]; '0-3,5' -> [0, 1, 2, 3, 5]."""
    out: list[float] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            raise CoefficientsError(f"empty item in {text!r}")
        lo, sep, hi = part.partition("-")
        try:
            if sep and lo.strip():
                a, b = int(lo), int(hi)
                if b < a:
                    raise CoefficientsError(f"range {part!r} runs backwards")
                if b - a > 100:
                    raise CoefficientsError(f"range {part!r} is too long (at most 100 members)")
                out.extend(float(i) for i in range(a, b + 1))
            else:
                out.append(float(part))
        except CoefficientsError:
            raise
        except ValueError:
            raise CoefficientsError(f"cannot read {part!r} (use e.g. 0-7 or 0,1,2.5)") from None
    for phi in out:
        if not math.isfinite(phi) or phi < 0:
            raise CoefficientsError(f"phi must be finite and >= 0, got {phi:g}")
    return sorted(set(out))
