"""The detector spec: a classification spec as backbone, with EfficientDet's parts around it.

The document (format ``nas-detector``, version 1)::

    {
      "format": "nas-detector", "version": 1, "name": "efficientdet-d0",
      "backbone": {... a complete nas-spec document ...},
      "resolution": 512, "num_classes": 90,
      "levels": {"min": 3, "max": 7},
      "bifpn": {"width": 64, "repeats": 3, "fusion": "fast_normalized"},
      "head": {"repeats": 3},
      "anchors": {"num_scales": 3, "aspect_ratios": [[1.0, 1.0], [1.4, 0.7], [0.7, 1.4]], "anchor_scale": 4.0},
      "activation": "swish",
      "bn": {"eps": 0.001, "momentum": 0.01},
      "provenance": {...}
    }

Conventions (the materializer :mod:`nas.detection.build` and the cost model
:mod:`nas.detection.cost` both follow them; they are the reference's, effdet's
``tf_efficientdet_*``):

* The backbone is any classification spec; its stem and stages are used, its head,
  classifier, dropout and own ``resolution`` are not.  Level ``l`` has stride
  ``2**l``; the backbone gives every level from ``levels.min`` up to its total
  stride (:func:`backbone_taps`: the last layer at that stride), and the levels
  above are made by downsampling, as the reference does: the first by a 1x1 conv
  + BN to the BiFPN width (when the widths differ) and a 3x3 max pool of stride 2,
  the others by the max pool alone.
* BiFPN (:func:`bifpn_nodes`): a top-down then a bottom-up path over the levels;
  each node resamples its inputs to its level (nearest 2x upsampling, 3x3/2 max
  pooling, and a 1x1 conv + BN where an input's width is not the BiFPN width, one
  per use of the input), fuses them (``fast_normalized``: sum relu(w_i) x_i /
  (1e-4 + sum relu(w_j)); ``sum``: a plain sum, as D6-D7 do), then activation ->
  3x3 depthwise -> 1x1 conv with bias -> BN.
* Class and box heads: ``head.repeats`` separable 3x3 convs shared across levels,
  each followed by a BN per level and the activation, then a shared separable
  prediction conv: ``num_anchors * num_classes`` and ``num_anchors * 4`` outputs.
* Anchors: ``num_scales`` octave scales ``2**(i/num_scales)`` times each aspect
  ratio ``[x, y]`` at every location of every level, side ``anchor_scale * stride
  * octave scale * ratio``; ordered (level, y, x, scale, ratio).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..atomic import atomic_write_text
from ..document import check_format
from ..spec import (ACTIVATIONS, MAX_CLASSES, MAX_RESOLUTION, BatchNorm, Spec, SpecError, check_choice, check_int,
                    check_number, check_object, describe, iter_layers, join_path, load_document, parse_json)

__all__ = [
    "FORMAT",
    "VERSION",
    "FUSIONS",
    "FUSION_EPS",
    "Levels",
    "BiFPN",
    "DetectionHead",
    "Anchors",
    "DetectorSpec",
    "backbone_stride",
    "backbone_taps",
    "bifpn_nodes",
    "Node",
]

FORMAT = "nas-detector"
VERSION = 1

FUSIONS = ("fast_normalized", "sum")
FUSION_EPS = 1e-4  # the reference's epsilon in fast normalized fusion

# Bounds: D7 uses width 384, 8 BiFPN repeats, 5 head repeats, levels 3-7; these leave room
# for larger searched detectors while catching typos that would exhaust memory.
MIN_LEVEL, MAX_LEVEL = 2, 10
MAX_WIDTH = 2048
MAX_BIFPN_REPEATS = 16
MAX_HEAD_REPEATS = 16
MAX_SCALES = 8
MAX_ASPECTS = 16


@dataclass(frozen=True)
class Levels:
    """Feature levels ``min`` .. ``max``; level ``l`` has stride ``2**l``."""

    min: int = 3
    max: int = 7

    @classmethod
    def from_dict(cls, d: Any, path: str = "levels") -> "Levels":
        d = check_object(d, path, ("min", "max"))
        lo = check_int(d["min"], join_path(path, "min"), MIN_LEVEL, MAX_LEVEL - 1)
        hi = check_int(d["max"], join_path(path, "max"), MIN_LEVEL + 1, MAX_LEVEL)
        if hi <= lo:
            raise SpecError(join_path(path, "max"), f"must be above levels.min ({lo}): a BiFPN needs two levels, got {hi}")
        return cls(lo, hi)

    @property
    def count(self) -> int:
        return self.max - self.min + 1


@dataclass(frozen=True)
class BiFPN:
    width: int = 64
    repeats: int = 3
    fusion: str = "fast_normalized"

    @classmethod
    def from_dict(cls, d: Any, path: str = "bifpn") -> "BiFPN":
        d = check_object(d, path, ("width", "repeats", "fusion"))
        return cls(width=check_int(d["width"], join_path(path, "width"), 1, MAX_WIDTH),
                   repeats=check_int(d["repeats"], join_path(path, "repeats"), 1, MAX_BIFPN_REPEATS),
                   fusion=check_choice(d["fusion"], join_path(path, "fusion"), FUSIONS))


@dataclass(frozen=True)
class DetectionHead:
    """Depth of the class and box nets (the reference gives both the same)."""

    repeats: int = 3

    @classmethod
    def from_dict(cls, d: Any, path: str = "head") -> "DetectionHead":
        d = check_object(d, path, ("repeats",))
        return cls(repeats=check_int(d["repeats"], join_path(path, "repeats"), 1, MAX_HEAD_REPEATS))


@dataclass(frozen=True)
class Anchors:
    num_scales: int = 3
    aspect_ratios: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))
    anchor_scale: float = 4.0

    @classmethod
    def from_dict(cls, d: Any, path: str = "anchors") -> "Anchors":
        d = check_object(d, path, ("num_scales", "aspect_ratios", "anchor_scale"))
        rp = join_path(path, "aspect_ratios")
        raw = d["aspect_ratios"]
        if not isinstance(raw, list):
            raise SpecError(rp, f"must be an array of [x, y] pairs, got {describe(raw)}")
        if not 1 <= len(raw) <= MAX_ASPECTS:
            raise SpecError(rp, f"must have 1 to {MAX_ASPECTS} ratios, got {len(raw)}")
        ratios = []
        for i, r in enumerate(raw):
            p = f"{rp}[{i}]"
            if not isinstance(r, list):
                raise SpecError(p, f"must be an [x, y] pair, got {describe(r)}")
            if len(r) != 2:  # a ratio list of another length cannot be read as (x, y)
                raise SpecError(p, f"must be an [x, y] pair (2 numbers), got {len(r)} numbers")
            ratios.append(tuple(float(check_number(v, f"{p}[{j}]", 0.0, 100.0, lo_open=True)) for j, v in enumerate(r)))
        return cls(num_scales=check_int(d["num_scales"], join_path(path, "num_scales"), 1, MAX_SCALES),
                   aspect_ratios=tuple(ratios),  # type: ignore[arg-type]
                   anchor_scale=float(check_number(d["anchor_scale"], join_path(path, "anchor_scale"), 0.0, 1024.0,
                                                   lo_open=True)))

    def to_dict(self) -> dict:
        return {"num_scales": self.num_scales, "aspect_ratios": [list(r) for r in self.aspect_ratios],
                "anchor_scale": self.anchor_scale}

    @property
    def per_location(self) -> int:
        return self.num_scales * len(self.aspect_ratios)


def backbone_stride(backbone: Spec) -> int:
    """The backbone's total stride (stem times every stage's)."""
    s = backbone.stem.stride
    for st in backbone.stages:
        s *= st.stride
    return s


def backbone_taps(backbone: Spec, min_level: int) -> list[int]:
    """For each backbone level from ``min_level`` up: the global index of its last layer.

    Level ``l`` is the output of the last layer whose cumulative stride is ``2**l``
    (timm's ``features_only`` taps, which effdet uses)."""
    last: dict[int, int] = {}
    stride = backbone.stem.stride
    for p in iter_layers(backbone):
        stride *= p.stride
        last[stride] = p.global_index
    top = backbone_stride(backbone).bit_length() - 1
    return [last[1 << lvl] for lvl in range(min_level, top + 1)]


class Node(tuple):
    """One BiFPN node: its level and the indices of its inputs in the running feature list."""

    __slots__ = ()

    def __new__(cls, level: int, inputs: tuple[int, ...]):
        return super().__new__(cls, (level, tuple(inputs)))

    @property
    def level(self) -> int:
        return self[0]

    @property
    def inputs(self) -> tuple[int, ...]:
        return self[1]


def bifpn_nodes(levels: Levels) -> list[Node]:
    """The BiFPN topology (effdet's ``bifpn_config``): features ``0 .. n-1`` are the input
    levels; node ``k`` appends feature ``n + k``; a layer's outputs are the last ``n``."""
    ids = {lvl: [i] for i, lvl in enumerate(range(levels.min, levels.max + 1))}
    nodes = []
    nxt = levels.count
    for lvl in range(levels.max - 1, levels.min - 1, -1):  # top-down
        nodes.append(Node(lvl, (ids[lvl][-1], ids[lvl + 1][-1])))
        ids[lvl].append(nxt)
        nxt += 1
    for lvl in range(levels.min + 1, levels.max + 1):  # bottom-up
        nodes.append(Node(lvl, tuple(ids[lvl]) + (ids[lvl - 1][-1],)))
        ids[lvl].append(nxt)
        nxt += 1
    return nodes


@dataclass(frozen=True)
class DetectorSpec:
    """A fully resolved detector.  Equality compares the architecture (not name or provenance)."""

    backbone: Spec
    resolution: int
    num_classes: int
    levels: Levels = Levels()
    bifpn: BiFPN = BiFPN()
    head: DetectionHead = DetectionHead()
    anchors: Anchors = Anchors()
    activation: str = "swish"
    bn: BatchNorm = BatchNorm()
    name: str = field(default="", compare=False)
    provenance: dict = field(default_factory=dict, compare=False, hash=False)

    TOP_FIELDS = ("format", "version", "name", "backbone", "resolution", "num_classes", "levels", "bifpn", "head",
                  "anchors", "activation", "bn")

    def __post_init__(self):
        object.__setattr__(self, "provenance", json.loads(json.dumps(self.provenance, allow_nan=False)))
        self._check()

    def _check(self) -> None:
        top = backbone_stride(self.backbone).bit_length() - 1
        if top < self.levels.min:
            raise SpecError("backbone", f"too shallow for levels {self.levels.min}-{self.levels.max}: its total stride "
                                        f"is {1 << top} (level {top}), level {self.levels.min} needs stride "
                                        f"{1 << self.levels.min}")
        if top > self.levels.max:
            raise SpecError("backbone", f"its total stride {1 << top} (level {top}) is beyond levels.max "
                                        f"{self.levels.max}")
        largest = 1 << self.levels.max
        if self.resolution % largest:
            raise SpecError("resolution", f"must be divisible by the largest stride {largest} (level "
                                          f"{self.levels.max}), got {self.resolution}")

    # ------------------------------------------------------------ JSON in
    @classmethod
    def from_dict(cls, d: Any) -> "DetectorSpec":
        d = check_object(d, "", cls.TOP_FIELDS, ("provenance",))
        check_format(d, FORMAT, VERSION, error=SpecError)  # nas.document: the rules of every versioned document
        name = d["name"]
        if not isinstance(name, str):
            raise SpecError("name", f"must be a string, got {describe(name)}")
        provenance = d.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise SpecError("provenance", f"must be an object, got {describe(provenance)}")
        try:
            json.dumps(provenance, allow_nan=False)
        except (TypeError, ValueError):
            raise SpecError("provenance", "must contain only JSON values (no NaN or Infinity)") from None
        try:
            backbone = Spec.from_dict(d["backbone"])
        except SpecError as e:  # the backbone's own paths, under "backbone"
            raise SpecError(join_path("backbone", e.path), e.reason) from None
        return cls(
            name=name,
            backbone=backbone,
            resolution=check_int(d["resolution"], "resolution", 1, MAX_RESOLUTION),
            num_classes=check_int(d["num_classes"], "num_classes", 1, MAX_CLASSES),
            levels=Levels.from_dict(d["levels"]),
            bifpn=BiFPN.from_dict(d["bifpn"]),
            head=DetectionHead.from_dict(d["head"]),
            anchors=Anchors.from_dict(d["anchors"]),
            activation=check_choice(d["activation"], "activation", ACTIVATIONS),
            bn=BatchNorm.from_dict(d["bn"]),
            provenance=dict(provenance),
        )

    @classmethod
    def from_json(cls, text: str) -> "DetectorSpec":
        return cls.from_dict(parse_json(text))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DetectorSpec":
        return load_document(path, cls.from_json)

    # ------------------------------------------------------------ JSON out
    def to_dict(self) -> dict:
        d = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "backbone": self.backbone.to_dict(),
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "levels": dataclasses.asdict(self.levels),
            "bifpn": dataclasses.asdict(self.bifpn),
            "head": dataclasses.asdict(self.head),
            "anchors": self.anchors.to_dict(),
            "activation": self.activation,
            "bn": dataclasses.asdict(self.bn),
        }
        if self.provenance:
            d["provenance"] = json.loads(json.dumps(self.provenance))
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent) + ("\n" if indent is not None else "")

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())

    def replace(self, **changes: Any) -> "DetectorSpec":
        """A copy with top-level fields changed (dataclasses or their JSON), validated again."""
        d = self.to_dict()
        for key, value in changes.items():
            if isinstance(value, Spec):
                value = value.to_dict()
            elif isinstance(value, Anchors):
                value = value.to_dict()
            elif dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            d[key] = value
        return DetectorSpec.from_dict(d)

    def fingerprint(self) -> str:
        d = self.to_dict()
        d.pop("name", None)
        d.pop("provenance", None)
        d["backbone"].pop("name", None)
        d["backbone"].pop("provenance", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------ derived
    @property
    def backbone_levels(self) -> range:
        return range(self.levels.min, backbone_stride(self.backbone).bit_length())

    def feature_size(self, level: int, resolution: int | None = None) -> int:
        return (self.resolution if resolution is None else resolution) >> level

    def num_anchors(self, resolution: int | None = None) -> int:
        """Anchors over all levels: D0 at 512 px has 49,104."""
        cells = sum(self.feature_size(lvl, resolution) ** 2 for lvl in range(self.levels.min, self.levels.max + 1))
        return cells * self.anchors.per_location
