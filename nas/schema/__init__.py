"""The JSON Schema of the spec format (``spec.schema.json``, draft 2020-12).

:func:`nas.spec.Spec.from_dict` is the reference validator (its errors name the
JSON path); the schema documents the format for other tools and editors, and a
test keeps the two in agreement.

The op vocabulary is not written in the file: :func:`schema` fills in the stage's
``op`` enum, its description and one ``if``/``then`` rule per op that pins fields
from the op registry (:data:`nas.ops.OPS`), so an op added there is in the schema
too.  ``python -m nas.schema`` prints the complete schema (for editors and other
tools).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

__all__ = ["SCHEMA_FILE", "DETECTOR_SCHEMA_FILE", "schema", "detector_schema"]

SCHEMA_FILE = "spec.schema.json"
DETECTOR_SCHEMA_FILE = "detector.schema.json"


@lru_cache(maxsize=None)
def _text() -> str:
    return resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def schema() -> dict:
    """The spec format's JSON Schema, as a fresh dict, its op vocabulary and rules from :data:`nas.ops.OPS`."""
    from ..ops import OPS

    d = json.loads(_text())
    stage = d["$defs"]["stage"]
    stage["properties"]["op"] = {
        "enum": list(OPS),
        "description": " ".join(f"{name}: {op.description}" for name, op in OPS.items()),
    }
    rules = [{"if": {"properties": {"op": {"const": name}}, "required": ["op"]},
              "then": {"properties": {k: {"const": v} for k, v in op.fixed.items()}}}
             for name, op in OPS.items() if op.fixed]
    if rules:
        stage["allOf"] = rules
    return d


def detector_schema() -> dict:
    """The detector format's JSON Schema with the spec schema its ``backbone`` refers to bundled
    under ``$defs`` (a 2020-12 compound document: validators resolve the ``$ref`` by its ``$id``)."""
    d = json.loads(resources.files(__name__).joinpath(DETECTOR_SCHEMA_FILE).read_text(encoding="utf-8"))
    spec = schema()
    spec.pop("$schema", None)
    d.setdefault("$defs", {})["nas-spec"] = spec
    return d
