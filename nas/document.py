"""One layer for the toolkit's versioned JSON documents: read, parse, check the format, write.

Every versioned format (the spec ``nas-spec``, the detector ``nas-detector``, the latency
table ``nas-latency-table``, the ground truth ``nas-ground-truth``, ...) keeps its own
field validation, and takes from here the rules that are the same for all of them:

* **reading** (:func:`read_text`): UTF-8, at most :data:`MAX_BYTES` (a larger file is
  refused before it is read: no document of ours comes near it);
* **parsing** (:func:`parse_json`): strict JSON: ``NaN``, ``Infinity`` and ``-Infinity``
  are refused, so are duplicate keys (the last one silently winning hides typos), and
  nesting too deep for the parser is one error, not a crash;
* **format and version** (:func:`check_format`): ``format`` names the document kind and
  ``version`` is an integer this toolkit reads;
* **errors** (:class:`DocumentError`): a JSON path (``stages[2].kernel``, built with
  :func:`join_path`) and a reason, shown as ``path: reason``; a format turns them into
  its own error type (:class:`nas.spec.SpecError`, :class:`nas.latency.TableError`);
* **writing** (:func:`write_json`): atomically (:mod:`nas.atomic`), refusing NaN.

This module sits at the bottom with :mod:`nas.atomic`: it imports nothing of the toolkit
but that.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from .atomic import atomic_write_text

__all__ = ["DocumentError", "JSONSyntaxError", "MAX_BYTES", "MAX_VERSION", "read_text", "parse_json", "load_json",
           "check_format", "join_path", "describe", "type_name", "write_json"]

#: the largest document read (bytes); the largest we write, a latency table, is about 0.2 MB
MAX_BYTES = 64 * 2**20
#: versions are integers in [0, MAX_VERSION]
MAX_VERSION = 10**6


class DocumentError(ValueError):
    """A document failed a rule; ``path`` is the JSON path of the offending field ("" for the whole document)."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class JSONSyntaxError(DocumentError):
    """The text is not strict JSON; ``detail`` says why without the ``not valid JSON:`` prefix."""

    def __init__(self, detail: str):
        self.detail = detail
        super().__init__("", f"not valid JSON: {detail}")


def join_path(path: str, key: str) -> str:
    """``join_path("stages[0]", "kernel") == "stages[0].kernel"``; a key at the top is itself."""
    return f"{path}.{key}" if path else key


def type_name(v: Any) -> str:
    """The JSON type name of ``v`` (``null``, ``boolean``, ``number``, ...; else its Python type's)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def describe(v: Any) -> str:
    """A value as an error message shows it: its JSON text, or its JSON type name."""
    try:
        return json.dumps(v)
    except (TypeError, ValueError):
        return type_name(v)


def read_text(path: str | os.PathLike, what: str = "") -> str:
    """The UTF-8 text of ``path``; a DocumentError ``cannot read [WHAT ]PATH: why`` when it is missing,
    unreadable, not UTF-8 or larger than :data:`MAX_BYTES`."""
    p = Path(path)
    name = f"{what} {p}" if what else str(p)
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise DocumentError("", f"cannot read {name}: larger than {MAX_BYTES // 2**20} MiB")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DocumentError("", f"cannot read {name}: {getattr(e, 'strerror', None) or e}") from None


def _no_duplicate_keys(pairs: list) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:  # JSON allows it, but the last one silently winning hides typos
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def parse_json(text: str) -> Any:
    """Strict JSON (no NaN or Infinity, no duplicate keys); a :class:`JSONSyntaxError` with line and column."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise JSONSyntaxError(f"{e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # NaN / Infinity, duplicate keys
        raise JSONSyntaxError(str(e)) from None
    except RecursionError:
        raise JSONSyntaxError("nested too deeply") from None


def load_json(path: str | os.PathLike, what: str = "") -> Any:
    """:func:`read_text` then :func:`parse_json`; a syntax error names the file (``PATH: not valid JSON: ...``)."""
    text = read_text(path, what)
    try:
        return parse_json(text)
    except JSONSyntaxError as e:
        raise DocumentError("", f"{path}: {e.reason}") from None


def check_format(d: dict, format: str, version: int, *, hint: str = "",
                 error: Callable[[str, str], Exception] = DocumentError) -> int:
    """``d["format"] == format`` and ``d["version"] == version`` (an integer; an integral float counts).

    ``hint`` is appended to a wrong format's message (``" (is this a latency table?)"``); ``error(path,
    reason)`` makes the exception raised (default :class:`DocumentError`; a format passes its own).
    """
    got = d.get("format")
    if got != format:
        raise error("format", f"must be {json.dumps(format)}, got {describe(got)}{hint}")
    v = d.get("version")
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise error("version", f"must be an integer, got {describe(v)}")
    if not 0 <= v <= MAX_VERSION:
        raise error("version", f"must be in [0, {MAX_VERSION}], got {v}")
    if v != version:
        raise error("version", f"unsupported version {v} (this toolkit reads version {version})")
    return v


def write_json(path: str | os.PathLike, doc: Any, *, indent: int | None = 2) -> None:
    """``doc`` as JSON (no NaN or Infinity) to ``path``, atomically, ending with a newline."""
    atomic_write_text(path, json.dumps(doc, indent=indent, allow_nan=False) + "\n")
