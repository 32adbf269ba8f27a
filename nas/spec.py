"""The architecture spec: one versioned, fully resolved JSON document per network.

Everything in the toolkit passes specs around: search spaces decode choices into
them, the cost model and evaluators read them, scaling maps spec -> spec, and the
materializer and exporters turn them into code.  A spec is *data*: it is read from
JSON and written to JSON (never pickle or eval), validated field by field, and
immutable once made (frozen dataclasses).

The document (format ``nas-spec``, version 1)::

    {
      "format": "nas-spec", "version": 1,
      "name": "efficientnet-b0",
      "in_channels": 3, "resolution": 224, "num_classes": 1000,
      "activation": "swish",                     # stem and head
      "stem": {"out_channels": 32, "kernel": 3, "stride": 2},
      "stages": [
        {"op": "dwconv", "kernel": 3, "stride": 1, "expand_ratio": 1,
         "se_ratio": 0.25, "skip": "identity", "out_channels": 16, "repeats": 1,
         "activation": "swish", "se_activation": "swish"},
        ...
      ],
      "head": {"out_channels": 1280},
      "dropout": 0.2, "drop_connect_rate": 0.2,
      "bn": {"eps": 0.001, "momentum": 0.01},    # PyTorch momentum convention
      "provenance": {...}                        # free-form JSON, not architecture
    }

Conventions (the materializer in :mod:`nas.build` and the cost model in
:mod:`nas.cost` both follow them; the cross-layer ones are :func:`plan_layers`,
and each op's module and cost are registered under its name in
:data:`nas.blocks.LAYERS` and :data:`nas.ops.OPS`):

* A stage repeats one layer ``repeats`` times; only the first layer has the stage's
  stride and the previous stage's output width as input.
* ``op``: one of the ops of the op registry, :data:`nas.ops.OPS` (``mbconv``,
  ``dwconv``, ``conv``, ...); each entry says what the op builds and which fields it
  pins (``dwconv``: ``expand_ratio`` 1), and this module enforces them.
* Expanded width: ``round(in_channels * expand_ratio)``.
* SE squeezes to ``max(1, int(block_input_channels * se_ratio))`` channels; 0 means
  no SE.  The gate is a sigmoid; the squeeze activation is ``se_activation``.
* ``skip``: ``identity`` adds the input when the layer keeps stride 1 and width;
  ``none`` never adds; ``pool`` (the MnasNet space's pooling skip) always adds a
  shortcut: average pooling (kernel = stride = layer stride, ceil mode) when the
  layer downsamples, then a 1x1 conv + BN when the width changes; on a layer that
  keeps shape it is the identity.  Stochastic depth applies to every added branch.
* Stochastic depth ("drop connect") rate grows linearly with the global layer index:
  ``drop_connect_rate * i / n_layers`` (torchvision's rule).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple

from .atomic import atomic_write_text
from .document import DocumentError, JSONSyntaxError, check_format, describe, join_path, read_text
from .document import join_path as _join
from .document import type_name as _type_name
from .document import parse_json as parse_strict_json
from .ops import OPS as OP_REGISTRY

__all__ = [
    "FORMAT",
    "VERSION",
    "OPS",
    "SKIPS",
    "ACTIVATIONS",
    "SpecError",
    "Stem",
    "Stage",
    "Head",
    "BatchNorm",
    "Spec",
    "LayerPlan",
    "plan_layers",
    "iter_layers",
    "se_channels",
    "total_stride",
    "min_resolution",
    "expanded_channels",
    "round_filters",
    "check_int",
    "check_number",
    "check_choice",
    "check_object",
    "join_path",
    "describe",
    "parse_json",
]

FORMAT = "nas-spec"
VERSION = 1

OPS = tuple(OP_REGISTRY)  # the op vocabulary: nas.ops.OPS, where each op is declared once
SKIPS = ("identity", "none", "pool")
ACTIVATIONS = ("swish", "relu", "relu6")

# Bounds: generous enough for EfficientNet-L2 (800 px, 5.3x depth), tight enough to
# catch typos that would exhaust memory.
MAX_CHANNELS = 65536
MAX_REPEATS = 64
MAX_STAGES = 32
MAX_RESOLUTION = 4096
MAX_KERNEL = 15
MAX_EXPAND = 16
MAX_CLASSES = 1_000_000


class SpecError(DocumentError):
    """A spec failed validation; ``path`` is the JSON path of the offending field (:class:`nas.document.DocumentError`)."""


# ---------------------------------------------------------------- field checks


def _int(v: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise SpecError(path, f"must be an integer, got {json.dumps(v) if _jsonable(v) else _type_name(v)}")
    if not lo <= v <= hi:
        raise SpecError(path, f"must be in [{lo}, {hi}], got {v}")
    return v


def _num(v: Any, path: str, lo: float, hi: float, *, hi_open: bool = False, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SpecError(path, f"must be a number, got {json.dumps(v) if _jsonable(v) else _type_name(v)}")
    if not math.isfinite(v):
        raise SpecError(path, f"must be finite, got {v}")
    ok_lo = v > lo if lo_open else v >= lo
    ok_hi = v < hi if hi_open else v <= hi
    if not (ok_lo and ok_hi):
        raise SpecError(path, f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, got {v}")
    return v


def _choice(v: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str) or v not in choices:
        shown = json.dumps(v) if _jsonable(v) else _type_name(v)
        raise SpecError(path, f"must be one of {', '.join(choices)}; got {shown}")
    return v


def _jsonable(v: Any, strict: bool = False) -> bool:
    """Whether ``v`` serializes; ``strict`` also refuses NaN/Infinity, which our JSON reader rejects."""
    try:
        json.dumps(v, allow_nan=not strict)
        return True
    except (TypeError, ValueError):
        return False


def _obj(v: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(v, Mapping):
        raise SpecError(path, f"must be an object, got {_type_name(v)}")
    for key in v:
        if key not in required and key not in optional:
            raise SpecError(_join(path, str(key)), "unknown field")
    for key in required:
        if key not in v:
            raise SpecError(_join(path, key), "missing required field")
    return dict(v)


def _kernel(v: Any, path: str) -> int:
    k = _int(v, path, 1, MAX_KERNEL)
    if k % 2 == 0:
        raise SpecError(path, f"must be odd, got {k}")
    return k


# ---------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Stem:
    """The first conv: ``kernel`` x ``kernel``, ``stride``, BN, activation."""

    out_channels: int
    kernel: int = 3
    stride: int = 2

    @classmethod
    def from_dict(cls, d: Any, path: str = "stem") -> "Stem":
        d = _obj(d, path, ("out_channels", "kernel", "stride"))
        return cls(
            out_channels=_int(d["out_channels"], _join(path, "out_channels"), 1, MAX_CHANNELS),
            kernel=_kernel(d["kernel"], _join(path, "kernel")),
            stride=_int(d["stride"], _join(path, "stride"), 1, 2),
        )


@dataclass(frozen=True)
class Stage:
    """One row of the architecture table: a layer repeated ``repeats`` times."""

    op: str
    kernel: int
    stride: int
    expand_ratio: float
    se_ratio: float
    skip: str
    out_channels: int
    repeats: int
    activation: str = "swish"
    se_activation: str = "swish"

    FIELDS = ("op", "kernel", "stride", "expand_ratio", "se_ratio", "skip", "out_channels", "repeats",
              "activation", "se_activation")

    @classmethod
    def from_dict(cls, d: Any, path: str) -> "Stage":
        d = _obj(d, path, cls.FIELDS)
        op = _choice(d["op"], _join(path, "op"), OPS)
        fixed = OP_REGISTRY[op].fixed  # the fields this op pins (nas.ops)

        def pinned(key: str, value):
            if key in fixed and value != fixed[key]:
                raise SpecError(_join(path, key),
                                f"must be {json.dumps(fixed[key])} for op {op}, got {describe(value)}")
            return value

        expand = pinned("expand_ratio", _num(d["expand_ratio"], _join(path, "expand_ratio"), 1, MAX_EXPAND))
        if isinstance(expand, float) and expand.is_integer():
            expand = int(expand)
        se = pinned("se_ratio", _num(d["se_ratio"], _join(path, "se_ratio"), 0.0, 1.0, hi_open=True))
        return cls(
            op=op,
            kernel=pinned("kernel", _kernel(d["kernel"], _join(path, "kernel"))),
            stride=_int(d["stride"], _join(path, "stride"), 1, 2),
            expand_ratio=expand,
            se_ratio=float(se),  # 0 and 0.0 must serialize (and fingerprint) alike
            skip=pinned("skip", _choice(d["skip"], _join(path, "skip"), SKIPS)),
            out_channels=_int(d["out_channels"], _join(path, "out_channels"), 1, MAX_CHANNELS),
            repeats=_int(d["repeats"], _join(path, "repeats"), 1, MAX_REPEATS),
            activation=_choice(d["activation"], _join(path, "activation"), ACTIVATIONS),
            se_activation=_choice(d["se_activation"], _join(path, "se_activation"), ACTIVATIONS),
        )

    def to_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.FIELDS}

    def short(self) -> str:
        """A one-line form for logs (never parsed back)."""
        se = f"_se{self.se_ratio:g}" if self.se_ratio else ""
        e = f"_e{self.expand_ratio:g}" if self.op != "dwconv" else ""
        return f"{self.op}_k{self.kernel}_s{self.stride}{e}{se}_{self.skip}_c{self.out_channels}_r{self.repeats}"


@dataclass(frozen=True)
class Head:
    """1x1 conv + BN + activation before global pooling and the classifier."""

    out_channels: int

    @classmethod
    def from_dict(cls, d: Any, path: str = "head") -> "Head":
        d = _obj(d, path, ("out_channels",))
        return cls(out_channels=_int(d["out_channels"], _join(path, "out_channels"), 1, MAX_CHANNELS))


@dataclass(frozen=True)
class BatchNorm:
    """BN settings for every BN layer; ``momentum`` in PyTorch's convention (TF 0.99 == 0.01)."""

    eps: float = 1e-3
    momentum: float = 0.01

    @classmethod
    def from_dict(cls, d: Any, path: str = "bn") -> "BatchNorm":
        d = _obj(d, path, ("eps", "momentum"))
        return cls(
            eps=float(_num(d["eps"], _join(path, "eps"), 0.0, 1.0, lo_open=True)),
            momentum=float(_num(d["momentum"], _join(path, "momentum"), 0.0, 1.0)),
        )


@dataclass(frozen=True)
class Spec:
    """A fully resolved architecture.

    Equality compares the architecture only: ``name`` and ``provenance`` are
    labels, so a decoded search choice equals the preset it reproduces.
    """

    in_channels: int
    resolution: int
    num_classes: int
    stem: Stem
    stages: tuple[Stage, ...]
    head: Head
    activation: str = "swish"
    dropout: float = 0.2
    drop_connect_rate: float = 0.2
    bn: BatchNorm = BatchNorm()
    name: str = field(default="", compare=False)
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    TOP_FIELDS = ("format", "version", "name", "in_channels", "resolution", "num_classes", "activation",
                  "stem", "stages", "head", "dropout", "drop_connect_rate", "bn")

    def __post_init__(self):
        object.__setattr__(self, "stages", tuple(self.stages))
        # Keep provenance plain JSON data and private to this spec (no NaN: from_json refuses it).
        object.__setattr__(self, "provenance", json.loads(json.dumps(self.provenance, allow_nan=False)))

    # ------------------------------------------------------------ JSON in
    @classmethod
    def from_dict(cls, d: Any) -> "Spec":
        d = _obj(d, "", cls.TOP_FIELDS, ("provenance",))
        check_format(d, FORMAT, VERSION, error=SpecError)
        name = d["name"]
        if not isinstance(name, str):
            raise SpecError("name", f"must be a string, got {_type_name(name)}")
        stages_raw = d["stages"]
        if not isinstance(stages_raw, list):
            raise SpecError("stages", f"must be an array, got {_type_name(stages_raw)}")
        if not 1 <= len(stages_raw) <= MAX_STAGES:
            raise SpecError("stages", f"must have 1 to {MAX_STAGES} stages, got {len(stages_raw)}")
        provenance = d.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise SpecError("provenance", f"must be an object, got {_type_name(provenance)}")
        if not _jsonable(provenance, strict=True):
            raise SpecError("provenance", "must contain only JSON values (no NaN or Infinity)")
        spec = cls(
            name=name,
            in_channels=_int(d["in_channels"], "in_channels", 1, MAX_CHANNELS),
            resolution=_int(d["resolution"], "resolution", 1, MAX_RESOLUTION),
            num_classes=_int(d["num_classes"], "num_classes", 1, MAX_CLASSES),
            activation=_choice(d["activation"], "activation", ACTIVATIONS),
            stem=Stem.from_dict(d["stem"]),
            stages=tuple(Stage.from_dict(s, f"stages[{i}]") for i, s in enumerate(stages_raw)),
            head=Head.from_dict(d["head"]),
            dropout=float(_num(d["dropout"], "dropout", 0.0, 1.0, hi_open=True)),
            drop_connect_rate=float(_num(d["drop_connect_rate"], "drop_connect_rate", 0.0, 1.0, hi_open=True)),
            bn=BatchNorm.from_dict(d["bn"]),
            provenance=dict(provenance),
        )
        return spec

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        """Parse and validate; malformed JSON raises SpecError with line and column."""
        return cls.from_dict(parse_json(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Spec":
        return load_document(path, cls.from_json)

    # ------------------------------------------------------------ JSON out
    def to_dict(self) -> dict:
        d = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "in_channels": self.in_channels,
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "activation": self.activation,
            "stem": dataclasses.asdict(self.stem),
            "stages": [s.to_dict() for s in self.stages],
            "head": dataclasses.asdict(self.head),
            "dropout": self.dropout,
            "drop_connect_rate": self.drop_connect_rate,
            "bn": dataclasses.asdict(self.bn),
        }
        if self.provenance:
            d["provenance"] = json.loads(json.dumps(self.provenance))
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent) + ("\n" if indent is not None else "")

    def save(self, path: str | os.PathLike) -> None:
        """Write the spec atomically (temporary file, then rename)."""
        atomic_write_text(path, self.to_json())

    # ------------------------------------------------------------ helpers
    def replace(self, **changes: Any) -> "Spec":
        """A copy with fields changed, validated again through JSON."""
        d = self.to_dict()
        for key, value in changes.items():
            if key == "stages":
                value = [s.to_dict() if isinstance(s, Stage) else s for s in value]
            elif key in ("stem", "head", "bn") and dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            d[key] = value
        return Spec.from_dict(d)

    def fingerprint(self) -> str:
        """A short hash of the architecture (not the name or provenance), for caches."""
        d = self.to_dict()
        d.pop("name", None)
        d.pop("provenance", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def n_layers(self) -> int:
        return sum(s.repeats for s in self.stages)

    def short(self) -> str:
        return " ".join(s.short() for s in self.stages)


def se_channels(in_channels: int, se_ratio: float) -> int:
    """SE squeeze width, relative to the *block input* width (the reference rule)."""
    return max(1, int(in_channels * se_ratio))


def total_stride(spec: Spec) -> int:
    """The product of the stem's and every stage's stride: input pixels per final feature-map pixel."""
    s = spec.stem.stride
    for stage in spec.stages:
        s *= stage.stride
    return s


def min_resolution(spec: Spec) -> int:
    """Smallest input resolution accepted for training ``spec``: total stride / 4 (at least 2).

    Any resolution runs ('same' padding never shrinks a map below 1x1), but below
    this more than the last two downsamplings act on a 1x1 map; that is almost
    always a typo (B0: stride 32, so 8 px).
    """
    return max(2, total_stride(spec) // 4)


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a width and round it to a multiple of ``divisor`` (the EfficientNet reference rule).

    Nearest multiple, at least ``divisor``, and bumped up by one ``divisor`` if rounding
    removed more than 10 % of the width.  Used by compound scaling and by search
    spaces' filter multipliers, so both produce the same widths.
    """
    if width == 1.0:
        return channels
    v = channels * width
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:  # rounding must not remove more than 10 % of the width
        new += divisor
    return int(new)


def expanded_channels(in_channels: int, expand_ratio: float) -> int:
    return int(round(in_channels * expand_ratio))


class LayerPlan(NamedTuple):
    """One resolved layer of a spec: what the builder and the cost model both walk."""

    stage_index: int
    layer_index: int  # within the stage
    global_index: int
    stage: Stage
    in_channels: int
    stride: int
    drop_path: float


def plan_layers(stages, in_channels: int, drop_connect_rate: float) -> Iterator[LayerPlan]:
    """The cross-layer rules, over plain stage rows (anything with ``stride``, ``out_channels``, ``repeats``).

    Only a stage's first layer has the stage's stride and the previous width; the
    drop rate ramps linearly over the global layer index (torchvision's rule).
    Exported Python code embeds this function verbatim (:mod:`nas.export`), so it
    uses nothing but its arguments.
    """
    total = sum(stage.repeats for stage in stages)
    g = 0
    for si, stage in enumerate(stages):
        for li in range(stage.repeats):
            yield LayerPlan(si, li, g, stage, in_channels, stage.stride if li == 0 else 1,
                            drop_connect_rate * g / total)
            in_channels = stage.out_channels
            g += 1


def iter_layers(spec: Spec) -> Iterator[LayerPlan]:
    """Every layer of ``spec`` with its input width, stride and stochastic-depth rate (see :func:`plan_layers`)."""
    return plan_layers(spec.stages, spec.stem.out_channels, spec.drop_connect_rate)


# Public names of the field checks and the strict JSON reader, for the other versioned
# formats built on this one (detectors, nas.detection.spec): one set of rules, one error style.
check_int = _int
check_number = _num
check_choice = _choice
check_object = _obj


def load_document(path: str | os.PathLike, from_json):
    """Read ``path`` (UTF-8) and parse it with ``from_json``; a SpecError names the file."""
    p = Path(path)
    try:
        text = read_text(p)
    except DocumentError as e:
        raise SpecError(e.path, e.reason) from None
    try:
        return from_json(text)
    except SpecError as e:
        raise SpecError(e.path, e.reason if e.path else f"{p}: {e.reason}") from None


def parse_json(text: str) -> Any:
    """Parse a JSON document the way :meth:`Spec.from_json` does (no NaN, no duplicate keys);
    malformed input raises SpecError with line and column."""
    try:
        return parse_strict_json(text)  # the rules of every versioned document: nas.document
    except JSONSyntaxError as e:
        raise SpecError(e.path, e.reason) from None
