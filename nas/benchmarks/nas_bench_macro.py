"""NAS-Bench-Macro (Su et al., CVPR 2021): 6,561 MBConv networks trained on CIFAR-10, as specs and a table.

The benchmark's network (its ``train/model.py``), in the spec format:

* stem: 3x3 conv, 3 -> 32, stride 1, BN, ReLU (CIFAR's 32x32 input, 10 classes);
* 8 searchable layers in three stages of 2, 3 and 3; each stage's first layer has stride
  2 and doubles the width (32 -> 64 -> 128 -> 256), the others keep it; each layer is
  one spec stage (``repeats`` 1), so every layer has its own op;
* a layer is one of :data:`CHOICES`, digit 0, 1 or 2 of the benchmark's 8-digit key:
  ``identity`` (op ``identity``: nothing, or 1x1 stride-2 conv + BN where the shape
  changes), ``mb3_k3`` and ``mb6_k5`` (op ``mbconv``, expand 3 kernel 3 / expand 6
  kernel 5, ReLU, no SE, the residual where stride and width are kept);
* head: 1x1 conv to 1280, BN, ReLU, global average pool, linear 1280 -> 10; no
  dropout or stochastic depth; BN with PyTorch's defaults (eps 1e-5, momentum 0.1).

``nas.build_model(spec_for_key(k))`` has exactly the table's ``params`` for all 6,561
keys, and :func:`nas.cost.cost`'s ``conv_linear_flops`` equals the table's ``flops``
(tests/test_nas_bench_macro.py).  The table ships in ``data/`` with its licence and
citation (``data/README.md``); :func:`load_table` reads it.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from typing import Callable, Iterator

from ..spec import FORMAT, VERSION, Spec

__all__ = ["NAME", "CHOICES", "N_LAYERS", "STAGE_LAYERS", "TABLE_FILE", "TABLE_SHA256", "NotAMember", "Record",
           "Table", "load_table", "check_key", "spec_for_key", "key_for_spec", "skeleton"]

NAME = "nas-bench-macro"
#: a layer's choice, by its digit in the key
CHOICES = ("identity", "mb3_k3", "mb6_k5")
STAGE_LAYERS = (2, 3, 3)
N_LAYERS = sum(STAGE_LAYERS)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
TABLE_FILE = "nas-bench-macro_cifar10.json.gz"
#: SHA-256 of the uncompressed table, as published (data/README.md)
TABLE_SHA256 = "686dee8363cc21cca8c1f321ad5749454f2d9b9ca5972682e137e539bc522297"

# choice -> the stage fields it sets
_LAYER = {
    "identity": {"op": "identity", "kernel": 1, "expand_ratio": 1, "se_ratio": 0.0, "skip": "none"},
    "mb3_k3": {"op": "mbconv", "kernel": 3, "expand_ratio": 3, "se_ratio": 0.0, "skip": "identity"},
    "mb6_k5": {"op": "mbconv", "kernel": 5, "expand_ratio": 6, "se_ratio": 0.0, "skip": "identity"},
}


class NotAMember(LookupError):
    """A key or spec that is not one of the benchmark's 6,561 architectures."""


def _geometry() -> list[tuple[int, int]]:
    """(stride, out_channels) of each of the 8 layers."""
    out, width = [], STEM_CHANNELS
    for n in STAGE_LAYERS:
        width *= 2
        out += [(2, width)] + [(1, width)] * (n - 1)
    return out


_GEOMETRY = _geometry()


def check_key(key) -> str:
    """``key`` as the benchmark spells it (8 digits 0-2), else :class:`NotAMember` saying why."""
    if not isinstance(key, str) or len(key) != N_LAYERS or any(c not in "012" for c in key):
        shown = json.dumps(key) if isinstance(key, (str, int)) else type(key).__name__
        raise NotAMember(f"{NAME}: a key is {N_LAYERS} digits 0-2 (0 identity, 1 mb3_k3, 2 mb6_k5), got {shown}")
    return key


@lru_cache(maxsize=None)
def spec_for_key(key: str) -> Spec:
    """The member ``key`` (e.g. ``"22212220"``) as a spec (cached: specs are immutable)."""
    check_key(key)
    stages = [dict(_LAYER[CHOICES[int(d)]], stride=stride, out_channels=width, repeats=1, activation="relu",
                   se_activation="relu") for d, (stride, width) in zip(key, _GEOMETRY)]
    return Spec.from_dict({
        "format": FORMAT, "version": VERSION, "name": f"{NAME}-{key}", "in_channels": 3, "resolution": 32,
        "num_classes": 10, "activation": "relu", "stem": {"out_channels": STEM_CHANNELS, "kernel": 3, "stride": 1},
        "stages": stages, "head": {"out_channels": HEAD_CHANNELS}, "dropout": 0.0, "drop_connect_rate": 0.0,
        "bn": {"eps": 1e-5, "momentum": 0.1}, "provenance": {"benchmark": NAME, "benchmark_key": key}})


def skeleton() -> Spec:
    """The largest member (every layer ``mb6_k5``): what the space's ``base`` is."""
    return spec_for_key("2" * N_LAYERS)


def key_for_spec(spec: Spec) -> str:
    """The member's key; :class:`NotAMember` (naming the first difference) for any other spec."""
    if len(spec.stages) != N_LAYERS:
        raise NotAMember(f"{NAME}: a member has {N_LAYERS} one-layer stages, this spec has {len(spec.stages)} stages")
    digits = []
    for i, st in enumerate(spec.stages):
        for d, choice in enumerate(CHOICES):
            want = _LAYER[choice]
            if st.op == want["op"] and st.kernel == want["kernel"] and st.expand_ratio == want["expand_ratio"]:
                digits.append(str(d))
                break
        else:
            raise NotAMember(f"{NAME}: stages[{i}] ({st.short()}) is none of {', '.join(CHOICES)}")
    key = "".join(digits)
    member = spec_for_key(key)
    if spec != member:
        where = next((f"stages[{i}]" for i, (a, b) in enumerate(zip(spec.stages, member.stages)) if a != b),
                     "outside the searchable layers (stem, head, resolution, classes, BN, dropout)")
        raise NotAMember(f"{NAME}: the spec differs from member {key} at {where}")
    return key


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Record:
    """One row of the table: CIFAR-10 test accuracies in percent, as published."""

    key: str
    test_acc: tuple[float, float, float]  # three trainings
    mean_acc: float
    std: float
    params: int
    flops: int  # multiply-adds of convolutions and the linear layer (conv-linear convention)

    @property
    def accuracy(self) -> float:
        """``mean_acc`` as a fraction."""
        return self.mean_acc / 100.0


class Table:
    """The 6,561 records by key, with ranks (1 = the highest mean accuracy)."""

    def __init__(self, records: dict[str, Record]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records.values())

    def __contains__(self, key) -> bool:
        return key in self.records

    def __getitem__(self, key: str) -> Record:
        try:
            return self.records[key]
        except (KeyError, TypeError):
            check_key(key)
            raise NotAMember(f"{NAME}: no record for key {key}") from None

    def best(self, where: Callable[[Record], bool] | None = None) -> Record:
        """The highest mean accuracy (among the records ``where`` accepts); ties: the smallest key."""
        rows = [r for r in self if where is None or where(r)]
        if not rows:
            raise NotAMember(f"{NAME}: no record satisfies the condition")
        return min(rows, key=lambda r: (-r.mean_acc, r.key))

    @cached_property
    def _sorted_means(self) -> list[float]:
        return sorted((-r.mean_acc for r in self))

    def rank(self, key: str) -> int:
        """1 + the number of members with a strictly higher mean accuracy."""
        import bisect

        return 1 + bisect.bisect_left(self._sorted_means, -self[key].mean_acc)


def _parse(raw: bytes) -> Table:
    d = json.loads(raw)
    records = {}
    for key, v in d.items():
        check_key(key)
        acc = tuple(float(a) for a in v["test_acc"])
        if len(acc) != 3 or not all(math.isfinite(a) for a in acc):
            raise ValueError(f"{NAME}: record {key} has malformed test_acc")
        records[key] = Record(key, acc, float(v["mean_acc"]), float(v["std"]), int(v["params"]), int(v["flops"]))
    if len(records) != 3 ** N_LAYERS:
        raise ValueError(f"{NAME}: the table has {len(records)} records, not {3 ** N_LAYERS}")
    return Table(records)


@lru_cache(maxsize=1)
def load_table() -> Table:
    """The shipped table (read once per process, ~0.1 s); checked against the published SHA-256."""
    raw = gzip.decompress(resources.files(__package__).joinpath("data", TABLE_FILE).read_bytes())
    if hashlib.sha256(raw).hexdigest() != TABLE_SHA256:
        raise ValueError(f"{NAME}: the shipped table differs from the published one (SHA-256 mismatch)")
    return _parse(raw)
