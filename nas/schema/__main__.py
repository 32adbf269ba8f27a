"""``python -m nas.schema``: print the spec format's complete JSON Schema (op vocabulary included)."""
import json

from . import schema

print(json.dumps(schema(), indent=2))
