"""Exporters: a spec as standalone PyTorch code, as ONNX, or as TorchScript.

Three outputs, one rule each:

* :func:`export_python` writes *code*: one readable file that depends only on
  torch, with the architecture as a literal per-stage table, followed by the
  toolkit's own layer code embedded verbatim (``nas/blocks.py``,
  :func:`nas.spec.plan_layers`, :class:`nas.build.Network`; see ``_EMBEDDED``).
  Its module names and parameter shapes are those of
  :func:`nas.build.build_model`, so weights load both ways with ``strict=True``
  and the outputs are identical; an op added to the toolkit needs no edit here.  Nothing
  from the spec reaches the code unescaped: numbers and strings go through
  ``repr``, the class name must be a plain identifier, and the provenance goes
  into the docstring through :func:`_docstring_literal`.  The result is parsed
  back before it is returned, so a bug here fails loudly instead of writing
  code that says something else than the spec.
* :func:`export_onnx` and :func:`export_torchscript` write a *verified* file:
  the model is exported from ``eval()`` mode, the result is run (onnxruntime or
  ``torch.jit.load``) at batch 1 and batch 3 and compared with PyTorch (each
  output within ``TOLERANCE + RTOL * max|output|``), and only then is the file
  renamed into place.  A failed check leaves nothing behind.

:func:`fuse_bn` and :func:`optimize_for_inference` fold BN into the convs (and
optionally switch to channels-last) for CPU inference; they change the module
layout, so use them on a copy, never on a model whose ``state_dict`` you save.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import io
import json
import keyword
import math
import os
import re
import tempfile
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from .atomic import atomic_write_bytes
from .spec import Spec, Stage

__all__ = [
    "ExportError",
    "WeightsError",
    "MissingDependency",
    "FORMATS",
    "TOLERANCE",
    "RTOL",
    "tolerance",
    "compare_outputs",
    "default_class_name",
    "check_class_name",
    "export_python",
    "write_python",
    "export_onnx",
    "export_torchscript",
    "export",
    "load_weights",
    "fit_spec_to_weights",
    "initialized_model",
    "check_state_dict",
    "fuse_bn",
    "optimize_for_inference",
]

TOLERANCE = 1e-4
"""Absolute part of the check: on random input, each output of an exported file may differ from
PyTorch's by at most ``TOLERANCE + RTOL * max|PyTorch's output|`` (:func:`tolerance`)."""

RTOL = 1e-3
"""Relative part of the check, scaled by each output's largest absolute value: float32 rounding grows
with the outputs' scale and depends on the machine's kernels (EfficientDet-D0's raw outputs reach ~84
and differ by ~6e-4 on some CPUs).  1e-3 is PyTorch's own ONNX verification default."""

VERIFY_BATCHES = (1, 3)
"""Batch sizes the exporters check (3, not 2: a batch of 2 hides some axis mix-ups)."""


class ExportError(RuntimeError):
    """The export could not be done or did not verify (a runtime failure: exit 1)."""


class MissingDependency(ExportError):
    """An optional package (onnx, onnxruntime) is not installed."""


class WeightsError(ValueError):
    """The weights file is unreadable or does not fit the spec (bad input: exit 2)."""




# ------------------------------------------------------------------ class names

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
    if folded in _GENERATED_NAMES or hasattr(builtins, folded) or (folded.startswith("__") and folded.endswith("__")):
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
    from . import __version__

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
    text = Path(__file__).with_name(file).read_text(encoding="utf-8")
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
_GENERATED_NAMES = frozenset(_EMBEDDED_CODE.names | set(_CONSTANT_NAMES) | {"torch", "nn", "annotations"}
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
    from .presets import load_spec

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


# ------------------------------------------------------------------ weights


def check_state_dict(model, state: Mapping[str, Any], source: str = "weights") -> None:
    """Raise :class:`WeightsError` naming the first tensor of ``state`` that does not fit ``model``."""
    import torch

    expected = model.state_dict()
    for key, ref in expected.items():
        if key not in state:
            raise WeightsError(f"{source} do not match the spec: missing tensor {key} (shape {tuple(ref.shape)})")
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise WeightsError(f"{source} do not match the spec: {key} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(ref.shape):
            raise WeightsError(f"{source} do not match the spec: {key} has shape {tuple(got.shape)}, "
                               f"the spec needs {tuple(ref.shape)}")
        if got.is_floating_point() != ref.is_floating_point():
            raise WeightsError(f"{source} do not match the spec: {key} has dtype {got.dtype}, expected {ref.dtype}")
    for key in state:
        if key not in expected:
            raise WeightsError(f"{source} do not match the spec: unexpected tensor {key}")


def _read_state_dict(path: str | os.PathLike) -> dict:
    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"cannot read weights {p}: no such file")
    try:
        # weights_only: a weights file is data; never unpickle arbitrary objects.
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = " ".join(str(e).split())[:200]
        raise WeightsError(f"cannot read weights {p}: {type(e).__name__}: {msg}") from None
    # Accept a bare state_dict or a training checkpoint that holds one.
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "weights"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"cannot read weights {p}: not a state_dict (a mapping of tensor names to tensors)")
    return dict(obj)


def load_weights(spec, path_or_state) -> "torch.nn.Module":
    """``build_model(spec)`` with weights loaded (a path to a ``.pt`` state_dict, or a state_dict).

    Raises :class:`WeightsError` (one line, naming the first mismatching tensor) when they do not fit.
    """
    from .build import build_model
    from .presets import load_spec

    spec = load_spec(spec)
    model = build_model(spec)
    if isinstance(path_or_state, Mapping):
        state, source = dict(path_or_state), "weights"
    else:
        state, source = _read_state_dict(path_or_state), f"weights {path_or_state}"
    check_state_dict(model, state, source)
    model.load_state_dict(state, strict=True)
    return model


def fit_spec_to_weights(spec, path_or_state) -> tuple[Any, list[str]]:
    """``spec`` with ``num_classes`` and ``in_channels`` taken from the weights' classifier and stem.

    Returns the (possibly) changed spec and one note per change, e.g. ``num_classes 1000 -> 10``,
    for the caller to show: weights inherited from a supernet or trained by ``nas-train`` have
    the data's classes, while a searched spec keeps the skeleton's.  Anything else that
    does not fit is left to :func:`check_state_dict`.
    """
    from .presets import load_spec

    spec = load_spec(spec)
    state = dict(path_or_state) if isinstance(path_or_state, Mapping) else _read_state_dict(path_or_state)
    changes: dict[str, int] = {}
    fc, stem = state.get("classifier.weight"), state.get("stem.0.weight")
    if getattr(fc, "ndim", 0) == 2 and fc.shape[0] != spec.num_classes:
        changes["num_classes"] = int(fc.shape[0])
    if getattr(stem, "ndim", 0) == 4 and stem.shape[1] != spec.in_channels:
        changes["in_channels"] = int(stem.shape[1])
    if not changes:
        return spec, []
    notes = [f"{k} {getattr(spec, k)} -> {v}" for k, v in changes.items()]
    return spec.replace(**changes), notes


def initialized_model(spec, seed: int = 0, calibration_resolution: int | None = None):
    """``build_model(spec)`` with a seeded init and BN statistics from one seeded random batch of 8.

    What the exporters use when no weights are given: reproducible, and numerically
    meaningful to verify (see :mod:`nas.bn`).  Calibration runs at ``min(resolution, 128)``
    by default, to stay cheap for the large presets.
    """
    import torch

    from .bn import recalibrate_bn
    from .build import build_model
    from .presets import load_spec

    spec = load_spec(spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec)
    res = calibration_resolution or min(spec.resolution, 128)
    g = torch.Generator().manual_seed(seed)
    return recalibrate_bn(model, [torch.randn(8, spec.in_channels, res, res, generator=g)])


def _model(spec, weights, resolution):
    from .presets import load_spec
    from .spec import MAX_RESOLUTION

    spec = load_spec(spec)
    if resolution is None:
        resolution = spec.resolution
    if isinstance(resolution, bool) or not isinstance(resolution, int) or not 1 <= resolution <= MAX_RESOLUTION:
        raise ValueError(f"resolution must be an integer in [1, {MAX_RESOLUTION}], got {resolution!r}")
    if weights is None:
        model, source = initialized_model(spec, calibration_resolution=min(resolution, 128)), _INIT_WEIGHTS
    else:
        model = load_weights(spec, weights)
        source = str(weights) if not isinstance(weights, Mapping) else "state_dict"
    return spec, model.eval(), resolution, source


_INIT_WEIGHTS = "initialised (seed 0, BN statistics calibrated on one random batch)"


def _inputs(spec: Spec, resolution: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, spec.in_channels, resolution, resolution, generator=g) for b in VERIFY_BATCHES]


def tolerance(scale: float) -> float:
    """The largest difference accepted for an output whose largest absolute PyTorch value is ``scale``."""
    return TOLERANCE + RTOL * scale


def compare_outputs(name: str, ref_outputs, outputs, labels=None) -> dict:
    """Compare exported outputs with PyTorch's (shape, finiteness, then :func:`tolerance` per output).

    Returns ``max_abs_diff``, ``max_rel_diff`` (a difference over its output's largest absolute
    value), ``max_abs_output`` and ``within`` (every output within its tolerance).
    """
    import numpy as np

    res = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "max_abs_output": 0.0, "within": True}
    for i, (ref, out) in enumerate(zip(ref_outputs, outputs)):
        what = f"{name} output" + (f" {labels[i]}" if labels else "")
        out = np.asarray(out)
        if out.shape != ref.shape:
            raise ExportError(f"{what} has shape {out.shape}, PyTorch's {ref.shape}")
        if not np.isfinite(out).all():
            raise ExportError(f"{what} is not finite")
        diff = float(np.max(np.abs(out.astype(np.float64) - ref.astype(np.float64)), initial=0.0))
        scale = float(np.max(np.abs(ref.astype(np.float64)), initial=0.0))
        res["max_abs_diff"] = max(res["max_abs_diff"], diff)
        res["max_rel_diff"] = max(res["max_rel_diff"], diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf))
        res["max_abs_output"] = max(res["max_abs_output"], scale)
        res["within"] = res["within"] and diff <= tolerance(scale)
    return res


def describe_check(report: dict) -> str:
    """The check's figures as the commands print them: both differences and the tolerance."""
    return (f"max |diff| {report['max_abs_diff']:.2g}, relative {report['max_rel_diff']:.2g} (tolerance "
            f"{report['atol']:g} + {report['rtol']:g} x max |output|, each output; largest |output| "
            f"{report['max_abs_output']:.3g})")


def mismatch(name: str, cmp: dict) -> str:
    """The failure message for a :func:`compare_outputs` result that is not ``within``."""
    return (f"{name} differs from PyTorch by {cmp['max_abs_diff']:.3g}, relative {cmp['max_rel_diff']:.2g} "
            f"(tolerance {TOLERANCE:g} + {RTOL:g} x max |output|, each output)")


# ------------------------------------------------------------------ ONNX


def _require_onnx():
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise MissingDependency(f"ONNX export needs onnx and onnxruntime ({e.name or e} is not installed): "
                                f"pip install nas-toolkit[export]") from None
    return onnx, onnxruntime


def _onnx_legacy(model, x, opset, tmpdir) -> bytes:
    import torch

    path = os.path.join(tmpdir, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice about the TorchScript-based exporter
        torch.onnx.export(model, (x,), path, dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          do_constant_folding=True)
    if len(os.listdir(tmpdir)) > 1:  # weights went to external data files: the 2 GB protobuf limit
        raise ExportError("the model is too large for a single ONNX file (over 2 GB of weights)")
    return Path(path).read_bytes()


def _onnx_dynamo(model, x, opset, tmpdir) -> bytes:
    import contextlib
    import logging

    import torch

    # The dynamo exporter prints progress to stdout and logs warnings (e.g. about torchvision
    # ops) to stderr; a command's output must stay one line.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"], output_names=["logits"],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                                        opset_version=opset, verbose=False)
    finally:
        logger.setLevel(level)
    return program.model_proto.SerializeToString()


_ONNX_EXPORTERS = {
    # Legacy first: fast (about 1 s for B0 here), no onnxscript, and it keeps BN in eval mode
    # (the dynamo exporter has open reports of BN left in training mode and wrong conv bias shapes).
    "torchscript (legacy)": _onnx_legacy,
    "dynamo": _onnx_dynamo,
}


def export_onnx(spec, path: str | os.PathLike, weights=None, resolution: int | None = None,
                opset: int | None = None, exporter: str | None = None) -> dict:
    """Export ``spec`` (with ``weights``: a path or a state_dict) to ONNX with a dynamic batch axis.

    The file is checked with ``onnx.checker``, run in onnxruntime at batch 1 and 3
    and compared with PyTorch; it is written (atomically) only when every output is
    within :func:`tolerance` of PyTorch's.  ``exporter`` picks one of
    ``"torchscript (legacy)"`` or ``"dynamo"``; by default the legacy exporter is
    tried first and dynamo is the fallback.  Returns a report dict.
    """
    onnx, ort = _require_onnx()  # first: a missing package fails before any work
    import torch

    spec, model, resolution, source = _model(spec, weights, resolution)
    xs = _inputs(spec, resolution)
    with torch.no_grad():
        refs = [model(x).numpy() for x in xs]
    names = [exporter] if exporter else list(_ONNX_EXPORTERS)
    if exporter is not None and exporter not in _ONNX_EXPORTERS:
        raise ValueError(f"unknown ONNX exporter {exporter!r}; one of {', '.join(_ONNX_EXPORTERS)}")
    failures = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix="nas-export-") as tmp:
            try:
                data = _ONNX_EXPORTERS[name](model, xs[0], opset, tmp)
                proto = onnx.load_from_string(data)
                onnx.checker.check_model(proto)
                sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
                iname = sess.get_inputs()[0].name
                outs = [sess.run(None, {iname: x.numpy()})[0] for x in xs]
                cmp = compare_outputs("onnxruntime", refs, outs)
            except ExportError as e:
                failures.append(f"{name}: {e}")
                continue
            except Exception as e:  # an exporter crash: try the next exporter, report all
                failures.append(f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
                continue
        if not cmp["within"]:
            failures.append(f"{name}: {mismatch('onnxruntime', cmp)}")
            continue
        atomic_write_bytes(path, data)
        used_opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        return {"format": "onnx", "path": str(path), "weights": source, "exporter": name, "opset": used_opset, "resolution": resolution,
                "batch_sizes": list(VERIFY_BATCHES), "max_abs_diff": cmp["max_abs_diff"],
                "max_rel_diff": cmp["max_rel_diff"], "max_abs_output": cmp["max_abs_output"],
                "atol": TOLERANCE, "rtol": RTOL, "bytes": len(data), "onnxruntime": ort.__version__}
    raise ExportError("ONNX export failed, nothing written: " + "; ".join(failures))


# ------------------------------------------------------------------ TorchScript


def export_torchscript(spec, path: str | os.PathLike, weights=None, resolution: int | None = None) -> dict:
    """Script ``spec``'s model (trace if scripting fails), save, reload and compare; write atomically."""
    import torch

    spec, model, resolution, source = _model(spec, weights, resolution)
    xs = _inputs(spec, resolution)
    with torch.no_grad():
        refs = [model(x).numpy() for x in xs]
    with warnings.catch_warnings():
        # torch >= 2.10 marks TorchScript deprecated; it still is the format users ask for here.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            scripted, method = torch.jit.script(model), "script"
        except Exception:  # pragma: no cover - our modules are scriptable; tracing keeps odd specs exportable
            warnings.simplefilter("ignore")
            scripted, method = torch.jit.trace(model, xs[0]), "trace"
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        data = buf.getvalue()
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    # optimized_execution(False): skip the profiling executor's warm-up runs (seconds for B0),
    # which only tune speed; the numbers are the same.
    with torch.no_grad(), torch.jit.optimized_execution(False):
        outs = [loaded(x).numpy() for x in xs]
    cmp = compare_outputs("TorchScript", refs, outs)
    if not cmp["within"]:
        raise ExportError(f"TorchScript export failed, nothing written: {mismatch('the reloaded module', cmp)}")
    atomic_write_bytes(path, data)
    return {"format": "torchscript", "path": str(path), "weights": source, "method": method, "resolution": resolution,
            "batch_sizes": list(VERIFY_BATCHES), "max_abs_diff": cmp["max_abs_diff"],
            "max_rel_diff": cmp["max_rel_diff"], "max_abs_output": cmp["max_abs_output"], "atol": TOLERANCE,
            "rtol": RTOL, "bytes": len(data)}


# ------------------------------------------------------------------ one entry point

FORMATS = {
    "py": lambda spec, path, class_name=None, **_: write_python(spec, path, class_name),
    "onnx": lambda spec, path, weights=None, resolution=None, opset=None, **_: export_onnx(
        spec, path, weights=weights, resolution=resolution, opset=opset),
    "torchscript": lambda spec, path, weights=None, resolution=None, **_: export_torchscript(
        spec, path, weights=weights, resolution=resolution),
}
"""Format name -> exporter(spec, path, **options) -> report dict."""


def export(spec, fmt: str, path: str | os.PathLike, **options) -> dict:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return FORMATS[fmt](spec, path, **options)


# ------------------------------------------------------------------ inference helpers


def fuse_bn(model):
    """A copy of ``model`` (eval mode) with every Conv2d -> BatchNorm2d pair folded into one conv.

    Works on any module built from ``nn.Sequential`` runs of conv then BN (ours,
    the exported Python code).  The BN becomes ``nn.Identity``, so the state_dict
    layout changes: use the result for inference only.
    """
    import copy

    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                seq._modules[b] = nn.Identity()
    return fused


def optimize_for_inference(model, channels_last: bool = True):
    """``fuse_bn(model)``, optionally in channels-last memory format (feed it channels-last input too)."""
    import torch

    fused = fuse_bn(model)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused
