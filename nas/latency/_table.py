"""The latency table (format ``nas-latency-table``, version 1) and the predictor.

::

    {
      "format": "nas-latency-table", "version": 1,
      "space": "mnasnet-b0", "resolution": 224,
      "backend": "torch", "device": "cpu", "threads": 1,
      "machine": {"cpu": "AMD EPYC", "cores": 2, "system": "Linux"},
      "versions": {"python": "3.11.2", "torch": "2.13.0+cpu"},
      "protocol": {"batch": 1, "warmup": 5, "runs": 15, "statistic": "median", "clock": "wall",
                   "evict_bytes": 0},
      "expected_entries": 2086,
      "entries": {"stem c3-32 k3 s2 r224 swish": 0.00112, ...},          # seconds
      "fit": {"model": "constant", "expected": 8,
              "networks": [{"name": ..., "fingerprint": ..., "measured": s, "sum": s}, ...]},
      "scale": 1.0, "overhead": 0.00031                                     # overhead null until fitted
    }

A prediction is ``scale`` x the sum of a spec's entries, plus ``overhead``: the
constant per-network cost that isolated entries do not see (the outer module
calls, the first layer's cold input), fitted by least squares on the ``fit``
networks.  Fit models (:data:`FIT_MODELS`): ``constant`` (scale 1; the overhead is
the mean of measured minus summed) and ``affine`` (scale and overhead both fitted:
for effects that grow with the network, such as weights no longer in cache when
a layer runs inside a whole network).  ``LatencyTable.refit`` switches model
from the stored fit networks without measuring again.  The table is written atomically
(the builder flushes partial tables, so a partial table is a valid table with
fewer entries and ``overhead`` null); reading it validates every field and names
the JSON path of the first bad one.  Torch-free.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..document import DocumentError, JSONSyntaxError, check_format, parse_json, read_text, write_json
from ..spec import Spec
from ._keys import Entry, conv_out, spec_entries, stage_variants, tail_entries

__all__ = ["FORMAT", "VERSION", "FIT_MODELS", "fit_linear", "TableError", "MissingEntryError", "LatencyTable", "predict",
           "predict_breakdown", "fastest_member", "TablePredictor"]

FORMAT = "nas-latency-table"
VERSION = 1
FIELDS = ("format", "version", "space", "resolution", "backend", "device", "threads", "machine", "versions",
          "protocol", "expected_entries", "entries", "fit", "scale", "overhead")


def _fit_constant(sums: list[float], measured: list[float]) -> tuple[float, float]:
    return 1.0, math.fsum(m - s for s, m in zip(sums, measured)) / len(sums)


def _fit_affine(sums: list[float], measured: list[float]) -> tuple[float, float]:
    n = len(sums)
    ms, mm = math.fsum(sums) / n, math.fsum(measured) / n
    var = math.fsum((s - ms) ** 2 for s in sums)
    if n < 2 or var <= 0:
        raise TableError("the affine fit needs at least 2 fit networks of different sizes")
    a = math.fsum((s - ms) * (m - mm) for s, m in zip(sums, measured)) / var
    return a, mm - a * ms


# fit model -> least squares (sums, measured) -> (scale, overhead)
FIT_MODELS = {"constant": _fit_constant, "affine": _fit_affine}


def fit_linear(model: str, sums: list[float], measured: list[float]) -> tuple[float, float]:
    if model not in FIT_MODELS:
        raise TableError(f"unknown fit model {model!r}; models: {', '.join(FIT_MODELS)}")
    if not sums:
        raise TableError("no fit networks measured")
    return FIT_MODELS[model](list(sums), list(measured))


class TableError(ValueError):
    """A latency table is unreadable, invalid, incomplete or for another set-up."""


class MissingEntryError(TableError, LookupError):
    """A spec contains a piece the table has no entry for."""


def _err(path: str, reason: str) -> TableError:
    return TableError(f"{path}: {reason}" if path else reason)


def _seconds(v: Any, path: str, allow_negative: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(path, f"must be a finite number of seconds, got {json.dumps(v) if _plain(v) else type(v).__name__}")
    if v < 0 and not allow_negative:
        raise _err(path, f"must be >= 0, got {v}")
    return float(v)


def _plain(v: Any) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def _int(v: Any, path: str, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _err(path, f"must be an integer >= {lo}, got {json.dumps(v) if _plain(v) else type(v).__name__}")
    return v


def _str(v: Any, path: str) -> str:
    if not isinstance(v, str) or not v:
        raise _err(path, "must be a non-empty string")
    return v


def _str_map(v: Any, path: str) -> dict:
    if not isinstance(v, dict) or not all(isinstance(x, (str, int)) for x in v.values()):
        raise _err(path, "must be an object of strings")
    return dict(v)


@dataclass
class LatencyTable:
    """Seconds per entry key, the fitted overhead, and the set-up they were measured on."""

    space: str
    resolution: int
    backend: str
    device: str
    threads: int
    machine: dict
    versions: dict
    protocol: dict
    expected_entries: int
    entries: dict = field(default_factory=dict)
    fit: dict = field(default_factory=lambda: {"model": "constant", "expected": 0, "networks": []})
    scale: float = 1.0
    overhead: float | None = None

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "space": self.space, "resolution": self.resolution,
                "backend": self.backend, "device": self.device, "threads": self.threads, "machine": self.machine,
                "versions": self.versions, "protocol": self.protocol, "expected_entries": self.expected_entries,
                "entries": dict(sorted(self.entries.items())), "fit": self.fit, "scale": self.scale,
                "overhead": self.overhead}

    @classmethod
    def from_dict(cls, d: Any) -> "LatencyTable":
        if not isinstance(d, dict):
            raise _err("", "a latency table must be a JSON object")
        for k in d:
            if k not in FIELDS:
                raise _err(k, "unknown field")
        for k in FIELDS:
            if k not in d:
                raise _err(k, "missing required field")
        check_format(d, FORMAT, VERSION, hint=" (is this a latency table?)", error=_err)
        entries = d["entries"]
        if not isinstance(entries, dict):
            raise _err("entries", "must be an object")
        clean = {k: _seconds(v, f"entries[{json.dumps(k)}]") for k, v in entries.items()}
        fit = d["fit"]
        if not isinstance(fit, dict) or set(fit) != {"model", "expected", "networks"} \
                or not isinstance(fit["networks"], list):
            raise _err("fit", 'must be an object {"model": ..., "expected": N, "networks": [...]}')
        if fit["model"] not in FIT_MODELS:
            raise _err("fit.model", f"must be one of {', '.join(FIT_MODELS)}, got {json.dumps(fit['model']) if _plain(fit['model']) else '?'}")
        _int(fit["expected"], "fit.expected")
        for i, n in enumerate(fit["networks"]):
            p = f"fit.networks[{i}]"
            if not isinstance(n, dict) or set(n) != {"name", "fingerprint", "measured", "sum"}:
                raise _err(p, "must be an object with name, fingerprint, measured, sum")
            _seconds(n["measured"], p + ".measured")
            _seconds(n["sum"], p + ".sum")
        scale = _seconds(d["scale"], "scale", allow_negative=True)
        if scale <= 0:
            raise _err("scale", f"must be > 0, got {scale}")
        overhead = d["overhead"]
        if overhead is not None:
            overhead = _seconds(overhead, "overhead", allow_negative=True)
        protocol = d["protocol"]
        if not isinstance(protocol, dict):
            raise _err("protocol", "must be an object")
        for k in ("batch", "warmup", "runs", "evict_bytes"):
            _int(protocol.get(k), f"protocol.{k}", 0 if k in ("warmup", "evict_bytes") else 1)
        if protocol.get("clock") not in ("wall", "cpu"):  # nas.latency._backends.CLOCKS (kept torch-free here)
            raise _err("protocol.clock", f"must be wall or cpu, got {json.dumps(protocol.get('clock')) if _plain(protocol.get('clock')) else '?'}")
        return cls(space=_str(d["space"], "space"), resolution=_int(d["resolution"], "resolution", 1),
                   backend=_str(d["backend"], "backend"), device=_str(d["device"], "device"),
                   threads=_int(d["threads"], "threads", 1), machine=_str_map(d["machine"], "machine"),
                   versions=_str_map(d["versions"], "versions"), protocol=dict(protocol),
                   expected_entries=_int(d["expected_entries"], "expected_entries"), entries=clean,
                   fit={"model": fit["model"], "expected": fit["expected"], "networks": list(fit["networks"])},
                   scale=scale, overhead=overhead)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyTable":
        p = Path(path)
        try:  # the rules of every versioned document (nas.document): size limit, strict JSON
            data = parse_json(read_text(p, "latency table"))
        except JSONSyntaxError as e:
            raise TableError(f"{p}: not a valid latency table (not JSON: {e.detail})") from None
        except DocumentError as e:
            raise TableError(str(e)) from None
        try:
            return cls.from_dict(data)
        except TableError as e:
            raise TableError(f"{p}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_dict(), indent=1)

    def refit(self, model: str | None = None) -> None:
        """Fit ``scale`` and ``overhead`` by least squares on the stored fit networks."""
        model = model or self.fit["model"]
        nets = self.fit["networks"]
        scale, overhead = fit_linear(model, [n["sum"] for n in nets], [n["measured"] for n in nets])
        if not scale > 0:
            raise TableError(f"the {model} fit on {len(nets)} networks gives scale {scale:.3g}: too few or too noisy "
                             f"fit networks for it; use the constant model")
        self.scale, self.overhead = scale, overhead
        self.fit["model"] = model

    # ------------------------------------------------------------ state
    @property
    def complete(self) -> bool:
        return len(self.entries) >= self.expected_entries and self.overhead is not None

    def describe(self) -> str:
        return (f"{self.backend} on {self.device}, {self.threads} thread(s), {self.protocol['clock']} clock, space {self.space} at "
                f"{self.resolution} px, {self.machine.get('cpu', '?')}")

    def setup(self) -> dict:
        """What must match for two tables (or a table and this machine) to be comparable."""
        return {"space": self.space, "resolution": self.resolution, "backend": self.backend, "device": self.device,
                "threads": self.threads, "cpu": self.machine.get("cpu"), "versions": self.versions,
                "protocol": self.protocol}


def predict_breakdown(spec: Spec, table: LatencyTable) -> list[tuple[str, str, float]]:
    """``(name, key, seconds)`` for every piece of ``spec``; raises :class:`MissingEntryError`."""
    rows, missing = [], []
    for name, e in spec_entries(spec):
        s = table.entries.get(e.key)
        if s is None:
            missing.append((name, e.key))
        else:
            rows.append((name, e.key, s))
    if missing:
        name, key = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingEntryError(f"the latency table has no entry for {name} ({key}){more}; it covers space "
                                f"{table.space} at {table.resolution} px with {len(table.entries)} of "
                                f"{table.expected_entries} entries")
    return rows


def predict(spec: Spec, table: LatencyTable) -> float:
    """Predicted seconds of one batch-1 forward pass of ``spec``: its entries summed, plus the overhead."""
    rows = predict_breakdown(spec, table)
    if table.overhead is None:
        raise TableError(f"the latency table has no fitted overhead yet ({len(table.fit['networks'])} of "
                         f"{table.fit['expected']} fit networks measured): run `nas-latency table` again to finish it")
    return table.scale * math.fsum(s for _, _, s in rows) + table.overhead


def fastest_member(space: Any, table: LatencyTable) -> Spec:
    """The member of ``space`` (at the table's resolution) with the smallest prediction.

    Exact, by dynamic programming over the stages: a prediction is a sum, and a
    stage's cost depends only on its own choices and the previous stage's width.
    A target latency below ``predict(fastest_member(space, table), table)`` cannot be met.
    """
    skeleton = space.base.replace(resolution=table.resolution)
    variants = stage_variants(space, skeleton)

    def t(e: Entry) -> float:
        try:
            return table.entries[e.key]
        except KeyError:
            raise MissingEntryError(f"the latency table has no entry for {e.key}; it covers space {table.space} at "
                                    f"{table.resolution} px with {len(table.entries)} of {table.expected_entries} "
                                    f"entries") from None

    spec_stem = spec_entries(skeleton)[0][1]
    # width -> (seconds so far, stages chosen so far)
    best: dict[int, tuple[float, tuple]] = {spec_stem.out_channels: (t(spec_stem), ())}
    res = spec_stem.out_resolution
    for stage, options in zip(skeleton.stages, variants):
        nxt: dict[int, tuple[float, tuple]] = {}
        out_res = conv_out(res, stage.stride)
        for v in sorted(options, key=lambda s: s.short()):
            rest = 0.0
            if v.repeats > 1:
                rest = (v.repeats - 1) * t(Entry.layer(v.op, v.expand_ratio, v.kernel, 1, v.se_ratio, v.skip,
                                                       v.out_channels, v.out_channels, out_res, v.activation,
                                                       v.se_activation))
            for cin, (sofar, chosen) in best.items():
                first = t(Entry.layer(v.op, v.expand_ratio, v.kernel, v.stride, v.se_ratio, v.skip, cin,
                                      v.out_channels, res, v.activation, v.se_activation))
                total = sofar + first + rest
                if v.out_channels not in nxt or total < nxt[v.out_channels][0]:
                    nxt[v.out_channels] = (total, chosen + (v,))
        best, res = nxt, out_res
    fastest = min(best.items(), key=lambda kv: kv[1][0] + _tail_seconds(skeleton, kv[0], res, t))
    return skeleton.replace(stages=fastest[1][1], name=f"{space.name}-fastest")


def _tail_seconds(skeleton: Spec, width: int, res: int, t) -> float:
    return math.fsum(t(e) for _, e in tail_entries(skeleton, width, res))


class TablePredictor:
    """``spec -> seconds`` from a table: what the search calls where it would measure (``--latency-table``)."""

    def __init__(self, table: LatencyTable):
        self.table = table

    def __call__(self, spec: Spec) -> float:
        return predict(spec, self.table)
