"""The ``py`` exporter: a spec as one readable, standalone PyTorch file (see :mod:`nas.export`)."""
from __future__ import annotations

import ast
import builtins
import dataclasses
import json
import keyword
import os
import re
import unicodedata
from pathlib import Path
from typing import NamedTuple

from ..atomic import atomic_write_bytes
from ..spec import Spec, Stage
from ._verify import ExportError

__all__ = ["check_class_name", "default_class_name", "export_python", "write_python", "GENERATED_NAMES"]

_CONSTANT_NAMES = ("STAGES", "SPEC_NAME", "SPEC_FINGERPRINT", "IN_CHANNELS", "RESOLUTION", "NUM_CLASSES", "ACTIVATION",
                   "STEM", "HEAD_CHANNELS", "DROPOUT", "DROP_CONNECT_RATE", "BN_EPS", "BN_MOMENTUM")
"""The constants the generated module defines above its stage table."""


def check_class_name(name: str) -> str:
    """``name`` if it can safely name the generated class; otherwise ValueError (one line)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"class name {name!r} is not a Python identifier (letters, digits, underscores; "
                         f"not starting with a digit)")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ValueError(f"class name {name!r} is a Python keyword")
    # Python folds identifiers with NFKC, so check the folded form for clashes.
    folded = unicodedata.normalize("NFKC", name)
    if folded in GENERATED_NAMES or hasattr(builtins, folded) or (folded.startswith("__") and folded.endswith("__")):
        raise ValueError(f"class name {name!r} would shadow a name the generated module uses; choose another")
    return name


def default_class_name(spec: Spec) -> str:
    """'efficientnet-b0' -> 'EfficientnetB0'; ASCII letters and digits only (spec names are untrusted)."""
    words = re.findall(r"[A-Za-z0-9]+", spec.name or "")
    name = "".join(w[:1].upper() + w[1:] for w in words)[:64]
    if not name or name[0].isdigit():
        name = "Net" + name
    try:
        return check_class_name(name)
    except ValueError:
        return "Net" + name


# ------------------------------------------------------------------ Python code


def _docstring_literal(text: str) -> str:
    """``text`` as a triple-quoted string literal that evaluates to exactly ``text``.

    Readable where it is safe (newlines and printable characters stay as they are)
    and escaped everywhere else: backslashes, every quote that could join another
    one into a closing delimiter, carriage returns, NULs and all other
    non-printable characters (including lone surrogates).
    """
    out = []
    n = len(text)
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            # Keep a lone quote readable; escape one that a quote follows, or the last
            # character (it would run into the closing delimiter).  So no two unescaped
            # quotes are ever adjacent and '\"\"\"' cannot appear.
            out.append('\\"' if i + 1 == n or text[i + 1] == '"' else '"')
        elif ch == "\n" or (ch.isprintable() and ch != "\r"):
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"""' + "".join(out) + '"""'


def _stage_rows(spec: Spec) -> list[tuple]:
    return [tuple(getattr(s, f) for f in _STAGE_COLUMNS) for s in spec.stages]


_STAGE_COLUMNS = Stage.FIELDS


def _table(rows: list[tuple]) -> str:
    """The stage table as aligned Python literals, one row per stage, under a header comment."""
    cells = [["(" * (j == 0) + repr(v) + "," for j, v in enumerate(row)] for row in rows]
    header = ["# " * (j == 0) + c for j, c in enumerate(_STAGE_COLUMNS)]
    widths = [max(len(header[j]), *(len(r[j]) for r in cells)) for j in range(len(header))]
    lines = ["    " + " ".join(c.ljust(widths[j]) for j, c in enumerate(header)).rstrip()]
    for r in cells:
        lines.append("    " + " ".join(c.ljust(widths[j]) for j, c in enumerate(r)).rstrip()[:-1] + "),")
    return "\n".join(lines)


def _module_docstring(spec: Spec, class_name: str) -> str:
    from .. import __version__

    # The spec's name is untrusted text: shown bare only when it is a plain word, else as JSON
    # (one line, quoted); the literal's escaping keeps either form inside the docstring.
    plain = re.fullmatch(r"[A-Za-z0-9_.+-]{1,100}", spec.name or "")
    title = spec.name if plain else json.dumps(spec.name, ensure_ascii=False) if spec.name else "unnamed spec"
    lines = [
        f"{class_name}: the {title} architecture as standalone PyTorch code.",
        "",
        f"Exported by nas-toolkit {__version__} (nas-export); depends only on torch.  The architecture",
        "is the STAGES table below (one row per stage; only a stage's first layer has the stage's",
        "stride and the previous stage's width).  The code below the table is the toolkit's own",
        "(nas/blocks.py, nas.build.Network, nas.spec.plan_layers), embedded verbatim, so module",
        "names and parameter shapes equal those of nas.build_model(spec), and weights trained with",
        "the toolkit load with strict=True:",
        "",
        f"    model = {class_name}()",
        "    model.load_state_dict(torch.load(\"weights.pt\", weights_only=True))",
        "",
        f"Spec fingerprint: {spec.fingerprint()}",
        f"Spec name: {json.dumps(spec.name, ensure_ascii=False)}",
        "Provenance (JSON):",
        json.dumps(spec.provenance, indent=2, ensure_ascii=False, sort_keys=True) if spec.provenance else "{}",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ embedded code
#
# The exported file's layers and network are the toolkit's own code, embedded verbatim
# (read from the source files, never re-typed here): so adding an op touches its module
# in nas/blocks.py, its entry in nas/ops.py and its test, and this exporter follows.
# _embedded_code checks the pieces on the way in: no import of the toolkit survives, only
# the standard library and torch may be imported, and every name the result uses is defined.

_EMBEDDED = (
    # (file in nas/, top-level names to embed or None for the whole file after its imports, heading)
    ("spec.py", ("se_channels", "expanded_channels", "LayerPlan", "plan_layers"),
     "Width rules and cross-layer rules (width chaining, strides, stochastic-depth ramp)"),
    ("blocks.py", None, "The layers"),
    ("build.py", ("init_reference_weights", "Network"), "The network"),
)


class _Embedded(NamedTuple):
    code: str  # the pieces, in order, under a heading comment each
    imports: str  # what they need: the standard library and torch only
    names: frozenset  # the module-level names they define


def _read_piece(file: str, names: tuple[str, ...] | None) -> tuple[str, ast.Module]:
    text = (Path(__file__).resolve().parent.parent / file).read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.splitlines(keepends=True)
    if names is None:
        header = 0  # the docstring, imports and __all__
        for i, node in enumerate(tree.body):
            doc = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            dunder_all = isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__all__"]
            if not (doc or dunder_all or isinstance(node, (ast.Import, ast.ImportFrom))):
                break
            header = node.end_lineno
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body if n.lineno > header):
            raise ExportError(f"internal error: nas/{file} imports below its header; the exporter cannot embed it")
        return "".join(lines[header:]).strip("\n") + "\n", tree
    chunks = []
    for name in names:
        node = next((n for n in tree.body if getattr(n, "name", None) == name), None)
        if node is None:
            raise ExportError(f"internal error: nas/{file} has no top-level {name} to embed")
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        chunks.append("".join(lines[first - 1:node.end_lineno]).rstrip("\n") + "\n")
    return "\n\n".join(chunks), tree


def _bound_names(tree: ast.AST) -> set[str]:
    names = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            names.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
    return names


def _embedded_code() -> _Embedded:
    import sys

    pieces, available = [], {}  # available: bound name -> (module or None, imported name), from the files' imports
    for file, names, heading in _EMBEDDED:
        code, tree = _read_piece(file, names)
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                for a in node.names:
                    available.setdefault(a.asname or a.name, ("." * node.level + (node.module or ""), a.name))
            elif isinstance(node, ast.Import):
                for a in node.names:
                    available.setdefault((a.asname or a.name).split(".")[0], (None, a.name))
        label = f"nas/{file}" + (f" ({', '.join(names)})" if names else "")
        pieces.append(f"# {'-' * 70}\n# {heading}:\n# {label}, embedded verbatim.\n\n\n{code}")
    code = "\n\n".join(pieces)
    tree = ast.parse(code)
    defined = _bound_names(tree)
    loaded = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    needed: dict[str | None, set[str]] = {"typing": {"NamedTuple"}}  # NamedTuple: the generated Stage row type
    for name in sorted(loaded - defined - set(dir(builtins)) - {"Stage"}):  # Stage: generated, see _stage_type
        if name not in available:
            raise ExportError(f"internal error: embedded code uses {name!r}, which nothing defines")
        module, imported = available[name]
        if module is not None and module.startswith("."):
            raise ExportError(f"internal error: embedded code uses {name!r} from nas{module}, which is not embedded "
                              f"(exported code cannot import the toolkit)")
        top = (module or imported).split(".")[0]
        if top != "torch" and top not in sys.stdlib_module_names:
            raise ExportError(f"internal error: embedded code needs {top}; exported code may import only torch")
        needed.setdefault(module, set()).add(imported if module is not None else name)
    plain = sorted(needed.pop(None, ()))
    stdlib = [m for m in sorted(needed) if m.split(".")[0] != "torch"]
    lines = ["from __future__ import annotations", ""]
    lines += [f"from {m} import {', '.join(sorted(needed[m]))}" for m in stdlib] + [""]
    lines += [f"import {m}" for m in plain]
    lines += [f"from {m} import {', '.join(sorted(needed[m]))}" for m in sorted(needed) if m not in stdlib]
    top_level = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                 for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    top_level |= {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return _Embedded(code, "\n".join(lines) + "\n", frozenset(top_level | {"Stage"}))


_EMBEDDED_CODE = _embedded_code()

# Names the generated module defines or uses itself; a class called like one of them
# would shadow it and break the file.
GENERATED_NAMES = frozenset(_EMBEDDED_CODE.names | set(_CONSTANT_NAMES) | {"torch", "nn", "annotations"}
                             | {n.strip() for line in _EMBEDDED_CODE.imports.splitlines() if " import " in line
                                for n in line.split(" import ", 1)[1].split(",")})


def _stage_type() -> str:
    """The STAGES rows' type: a named tuple with the fields of nas.spec.Stage (generated from it)."""
    fields = [(f.name, f.type if isinstance(f.type, str) else f.type.__name__) for f in dataclasses.fields(Stage)]
    if tuple(n for n, _ in fields) != _STAGE_COLUMNS:  # pragma: no cover - would be a bug in nas.spec
        raise ExportError("internal error: Stage.FIELDS differs from the Stage dataclass")
    return ('class Stage(NamedTuple):\n    """One row of STAGES (the fields of nas.spec.Stage)."""\n\n'
            + "".join(f"    {n}: {t}\n" for n, t in fields))


_CLASS = '''
class __CLASS__(Network):
    """The STAGES table and the constants above, built by Network (the toolkit's own builder)."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = IN_CHANNELS, dropout: float = DROPOUT,
                 drop_connect_rate: float = DROP_CONNECT_RATE):
        super().__init__([Stage(*row) for row in STAGES], in_channels=in_channels, num_classes=num_classes,
                         activation=ACTIVATION, stem=STEM, head_channels=HEAD_CHANNELS, dropout=dropout,
                         drop_connect_rate=drop_connect_rate, bn_eps=BN_EPS, bn_momentum=BN_MOMENTUM)


if __name__ == "__main__":
    model = __CLASS__().eval()
    n_params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        out = model(torch.randn(1, IN_CHANNELS, RESOLUTION, RESOLUTION))
    print(f"{SPEC_NAME or '__CLASS__'}: {n_params:,} parameters, output {tuple(out.shape)} at {RESOLUTION}x{RESOLUTION}")
'''


def export_python(spec, class_name: str | None = None) -> str:
    """Standalone PyTorch code for ``spec`` (anything :func:`nas.load_spec` accepts) as a string."""
    from ..presets import load_spec

    spec = load_spec(spec)
    class_name = check_class_name(class_name) if class_name is not None else default_class_name(spec)
    doc = _module_docstring(spec, class_name)
    rows = _stage_rows(spec)
    constants = [
        ("SPEC_NAME", spec.name, "the spec's name (a label, not architecture)"),
        ("SPEC_FINGERPRINT", spec.fingerprint(), "nas Spec.fingerprint() of the architecture"),
        ("IN_CHANNELS", spec.in_channels, None),
        ("RESOLUTION", spec.resolution, "nominal input size; the network runs at any size"),
        ("NUM_CLASSES", spec.num_classes, None),
        ("ACTIVATION", spec.activation, "stem and head"),
        ("STEM", (spec.stem.out_channels, spec.stem.kernel, spec.stem.stride), "out_channels, kernel, stride"),
        ("HEAD_CHANNELS", spec.head.out_channels, None),
        ("DROPOUT", spec.dropout, None),
        ("DROP_CONNECT_RATE", spec.drop_connect_rate, "stochastic depth of the last layer"),
        ("BN_EPS", spec.bn.eps, None),
        ("BN_MOMENTUM", spec.bn.momentum, "PyTorch convention (TF's 0.99 is 0.01 here)"),
    ]
    parts = [
        _docstring_literal(doc),
        _EMBEDDED_CODE.imports,
        f"__all__ = [{class_name!r}]\n",
    ]
    parts.append("\n".join(f"{k} = {v!r}" + (f"  # {c}" if c else "") for k, v, c in constants) + "\n")
    parts.append("# The architecture, one row per stage.\nSTAGES = [\n" + _table(rows) + "\n]\n\n")
    parts.append(_EMBEDDED_CODE.code + "\n\n# " + "-" * 70 + "\n# The exported architecture.\n\n")
    parts.append(_stage_type())
    parts.append(_CLASS.replace("__CLASS__", class_name))
    code = "\n".join(parts)
    _check_generated(code, doc, class_name, rows, constants)
    return code


def _check_generated(code: str, doc: str, class_name: str, rows: list[tuple], constants: list) -> None:
    """Parse the generated code back and insist it says what the spec says (defence in depth)."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:  # pragma: no cover - would be a bug in this module
        raise ExportError(f"internal error: generated code does not parse ({e.msg} at line {e.lineno})") from None
    problems = []
    if ast.get_docstring(tree, clean=False) != doc:
        problems.append("docstring differs from the spec's")
    values = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    if values.get("STAGES") != [tuple(r) for r in rows]:
        problems.append("stage table differs from the spec's")
    for k, v, _ in constants:
        if values.get(k) != v or type(values.get(k)) is not type(v):
            problems.append(f"{k} differs from the spec's")
    classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)]
    if classes[-1:] != [class_name]:
        problems.append("class name differs")
    if problems:  # pragma: no cover - would be a bug in this module
        raise ExportError("internal error: generated code check failed: " + "; ".join(problems))


def write_python(spec, path: str | os.PathLike, class_name: str | None = None) -> dict:
    """Write :func:`export_python`'s code to ``path`` atomically; returns a small report."""
    code = export_python(spec, class_name)
    atomic_write_bytes(path, code.encode("utf-8"))
    tree = ast.parse(code)
    name = [n.name for n in tree.body if isinstance(n, ast.ClassDef)][-1]
    return {"format": "py", "path": str(path), "class_name": name, "bytes": len(code.encode("utf-8"))}
