"""Command-line entry points, one module per command (``nas-show`` -> :mod:`nas.cli.show`, ...).

Shared rules, kept here once:

* bad input: one line on stderr, exit 2 (usage) or 1 (runtime), no traceback;
* heavy imports (torch, fvcore, ray) happen inside commands that need them;
* outputs are written atomically (:func:`nas.atomic.atomic_write_text`).

Set ``NAS_DEBUG=1`` to see the traceback of an unexpected error.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from ..allocator import tune_allocator
from ..spec import SpecError

__all__ = ["UsageError", "RuntimeFailure", "ArgumentParser", "command", "fail", "finite_float", "parse_quantity", "positive_int", "tune_allocator", "load_data", "write_spec"]


class UsageError(Exception):
    """Bad input from the user: exit 2."""


class RuntimeFailure(Exception):
    """The command could not do its work (data unreadable, training diverged, ...): exit 1."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump), exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def fail(prog: str, message: str, code: int) -> int:
    message = " ".join(str(message).split()) or "error"
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def command(prog: str) -> Callable[[Callable[[Sequence[str] | None], int | None]], Callable[..., int]]:
    """Wrap a ``main(argv)`` so that every failure becomes one line and an exit code."""

    def wrap(fn):
        @functools.wraps(fn)
        def main(argv: Sequence[str] | None = None) -> int:
            try:
                return int(fn(argv) or 0)
            except (UsageError, SpecError) as e:
                return fail(prog, str(e), 2)
            except RuntimeFailure as e:
                return fail(prog, str(e), 1)
            except KeyboardInterrupt:
                return fail(prog, "interrupted", 130)
            except BrokenPipeError:
                try:
                    sys.stdout = open(os.devnull, "w")
                except OSError:
                    pass
                return 1
            except MemoryError:
                return fail(prog, "out of memory", 1)
            except OSError as e:
                where = f" {e.filename}" if getattr(e, "filename", None) else ""
                return fail(prog, f"{e.strerror or e}:{where}".rstrip(":"), 1)
            except Exception as e:  # an internal error: still one line unless debugging
                if os.environ.get("NAS_DEBUG"):
                    raise
                return fail(prog, f"internal error: {type(e).__name__}: {e} (set NAS_DEBUG=1 for a traceback)", 1)

        def entry() -> None:
            sys.exit(main())

        main.entry = entry  # type: ignore[attr-defined]
        return main

    return wrap


def positive_int(label: str, minimum: int = 1):
    """An argparse ``type=`` for integers >= ``minimum`` (default 1) whose errors are usage errors naming ``label``."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise UsageError(f"{label} must be an integer, got {text!r}") from None
        if v < minimum:
            raise UsageError(f"{label} must be >= {minimum}, got {v}")
        return v

    return parse


def non_negative_int(label: str):
    """An argparse ``type=`` for integers >= 0 (usage errors naming ``label``)."""
    return positive_int(label, minimum=0)


def finite_float(label: str, *, lo: float | None = None):
    """An argparse ``type=`` for finite floats (>= ``lo`` when given) whose errors are usage errors naming ``label``."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{label}: not a number: {text!r}") from None
        if not math.isfinite(v):
            raise UsageError(f"{label} must be finite, got {text}")
        if lo is not None and v < lo:
            raise UsageError(f"{label} must be >= {lo:g}, got {text}")
        return v

    return parse


def parse_quantity(text: str, unit: str = "") -> float:
    """'400M', '0.4G', '4e8', '400000000', '20ms' -> float (SI prefixes; ``unit`` suffix optional)."""
    s = str(text).strip()
    if unit and s.endswith(unit):
        s = s[: -len(unit)].strip()
    prefixes = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9}
    scale = 1.0
    if s and s[-1] in prefixes:
        scale, s = prefixes[s[-1]], s[:-1]
    try:
        value = float(s) * scale
    except ValueError:
        raise UsageError(f"cannot parse {text!r} as a number{' of ' + unit if unit else ''} (e.g. 400M, 0.4G, 4e8)") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"{text!r} is not a finite number")
    return value




def load_data(source: str, seed: int = 0):
    """``nas.data.load_dataset`` for a command: a malformed ``--data`` string is a usage
    error (exit 2); missing, unreadable or corrupt data a runtime one (exit 1)."""
    from ..data import DataError, DataUsageError, load_dataset

    try:
        return load_dataset(source, seed=seed)
    except DataUsageError as e:
        raise UsageError(str(e)) from None
    except DataError as e:
        raise RuntimeFailure(str(e)) from None


def write_spec(spec, output: str | None, prog: str, folder_hint: str = "") -> None:
    """A spec (classifier or detector) to the file ``output`` (atomically, with a note on stderr),
    or to stdout when ``output`` is empty; a folder at ``output`` is a usage error."""
    if output:
        out = Path(output)
        if out.is_dir():
            raise UsageError(f"--output {out} is a folder; give a file name{folder_hint}")
        spec.save(out)
        print(f"{prog}: wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(spec.to_json())
