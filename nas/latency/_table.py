"""The latency table (format ``nas-latency-table``, version 2; version 1 is read too) and the predictor.

::

    {
      "format": "nas-latency-table", "version": 2,
      "space": "mnasnet-b0", "resolution": 224,
      "backend": "torch", "device": "cpu", "threads": 1,
      "machine": {"cpu": "AMD EPYC", "cores": 2, "system": "Linux"},
      "versions": {"python": "3.11.2", "torch": "2.13.0+cpu"},
      "protocol": {"version": 2, "threads": 1, "core": -1, "warmup": 10, "runs": 30, "rounds": 3,
                   "statistic": "iqr_mean", "duet": false, ...},          # nas.latency.Protocol.to_dict()
      "expected_entries": 2086,
      "entries": {"stem c3-32 k3 s2 r224 swish": 0.00112, ...},          # seconds
      "fit": {"model": "constant", "expected": 8,
              "networks": [{"name": ..., "fingerprint": ..., "measured": s, "sum": s}, ...]},
      "scale": 1.0, "overhead": 0.00031,                                    # overhead null until fitted
      "reference": {"name": ..., "fingerprint": ..., "seconds": s} or null, # the duet reference's time
      "load": [{"step": "table", "before": {...}, "after": {...}}, ...],   # the load around each measuring run
      "correction": {"features": ["one", "sum", "layers", "gflops", "act_mb"], "coef": [...],
                     "members": [{"name", "fingerprint", "measured", "features": [...]}, ...],
                     "expected": 30, "seed": 2, "ridge": 0.01, "fit": {...}} or null
    }

Version 1 (the protocol ``{"batch", "warmup", "runs", "statistic": "median", "clock",
"evict_bytes"}``, no ``reference`` nor ``correction``) loads as what it was measured with; saving
writes version 2.

**The correction** (``nas-latency refit TABLE --members N``, :func:`fit_correction`): what the layer
sum misses, fitted on N measured whole members.  A prediction is then ``coef . features(spec)``:
``one`` (a per-model overhead: the outer module calls, the first layer's cold input), ``sum`` (the
table's layer sum, in ms), ``layers`` (the pieces: per-piece dispatch costs differ inside a network
and alone), ``gflops`` (compute the isolated timing mis-weights) and ``act_mb`` (activation bytes
read and written: inside a network a layer's input comes from the previous layer and its weights
have been evicted by the layers between, which isolated pieces, timed repeatedly, do not see).
Least squares on relative errors (each row divided by its measurement: the ±10 % metric's scale),
with a small ridge towards the plain table (sum 1, the rest 0) on standardised columns, so that
the strongly correlated features stay well-conditioned.  Numpy only.

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
from ._protocol import Protocol

__all__ = ["FORMAT", "VERSION", "FEATURES", "spec_features", "fit_correction", "FIT_MODELS", "fit_linear", "TableError", "MissingEntryError", "LatencyTable", "predict",
           "predict_breakdown", "fastest_member", "TablePredictor"]

FORMAT = "nas-latency-table"
VERSION = 2
READS = (1, 2)  # the versions this toolkit reads
FIELDS_V1 = ("format", "version", "space", "resolution", "backend", "device", "threads", "machine", "versions",
             "protocol", "expected_entries", "entries", "fit", "scale", "overhead")
FIELDS = FIELDS_V1 + ("reference", "correction", "load")
FEATURES = ("one", "sum", "layers", "gflops", "act_mb")  # the correction's features (see the module doc)
DEFAULT_FEATURES = FEATURES
DEFAULT_RIDGE = 1e-2


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
    reference: dict | None = None
    correction: dict | None = None
    load_log: list = field(default_factory=list)  # JSON "load": the machine's load around every measuring run (nas.latency.load_record)

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "space": self.space, "resolution": self.resolution,
                "backend": self.backend, "device": self.device, "threads": self.threads, "machine": self.machine,
                "versions": self.versions, "protocol": self.protocol, "expected_entries": self.expected_entries,
                "entries": dict(sorted(self.entries.items())), "fit": self.fit, "scale": self.scale,
                "overhead": self.overhead, "reference": self.reference, "correction": self.correction,
                "load": self.load_log}

    @classmethod
    def from_dict(cls, d: Any) -> "LatencyTable":
        if not isinstance(d, dict):
            raise _err("", "a latency table must be a JSON object")
        v = d.get("version")
        version = check_format(d, FORMAT, v if (type(v) in (int, float) and v in READS) else VERSION,
                               hint=" (is this a latency table?)", error=_err)
        fields_ = FIELDS_V1 if version == 1 else FIELDS
        for k in d:
            if k not in fields_:
                raise _err(k, "unknown field")
        for k in fields_:
            if k not in d:
                raise _err(k, "missing required field")
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
        if protocol.get("version") != 2:  # the version-1 protocol
            for k in ("batch", "warmup", "runs", "evict_bytes"):
                _int(protocol.get(k), f"protocol.{k}", 0 if k in ("warmup", "evict_bytes") else 1)
            if protocol.get("clock") not in ("wall", "cpu"):  # nas.latency._backends.CLOCKS (kept torch-free here)
                raise _err("protocol.clock", f"must be wall or cpu, got {json.dumps(protocol.get('clock')) if _plain(protocol.get('clock')) else '?'}")
        try:
            Protocol.from_dict(protocol)
        except (TypeError, ValueError) as e:
            raise _err("", str(e) if str(e).startswith("protocol") else f"protocol: {e}") from None
        reference = d.get("reference")
        if reference is not None:
            if not isinstance(reference, dict) or set(reference) != {"name", "fingerprint", "seconds"}:
                raise _err("reference", 'must be null or {"name": ..., "fingerprint": ..., "seconds": s}')
            _seconds(reference["seconds"], "reference.seconds")
        correction = d.get("correction")
        if correction is not None:
            _check_correction(correction)
        load = d.get("load", [])
        if not isinstance(load, list) or not all(isinstance(x, dict) for x in load):
            raise _err("load", "must be a list of objects")
        return cls(space=_str(d["space"], "space"), resolution=_int(d["resolution"], "resolution", 1),
                   backend=_str(d["backend"], "backend"), device=_str(d["device"], "device"),
                   threads=_int(d["threads"], "threads", 1), machine=_str_map(d["machine"], "machine"),
                   versions=_str_map(d["versions"], "versions"), protocol=dict(protocol),
                   expected_entries=_int(d["expected_entries"], "expected_entries"), entries=clean,
                   fit={"model": fit["model"], "expected": fit["expected"], "networks": list(fit["networks"])},
                   scale=scale, overhead=overhead, reference=reference, correction=correction,
                   load_log=list(load))

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

    def measure_protocol(self) -> Protocol:
        """The protocol the table was measured with (and what checks it measures with)."""
        return Protocol.from_dict(self.protocol)

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


def spec_features(spec: Spec, table: LatencyTable, rows=None, names=FEATURES) -> list[float]:
    """The correction's features of ``spec`` (:data:`FEATURES`, in the units the coefficients use)."""
    if rows is None:
        rows = predict_breakdown(spec, table)
    out = []
    for n in names:
        if n == "one":
            out.append(1.0)
        elif n == "sum":
            out.append(math.fsum(s for _, _, s in rows) * 1e3)
        elif n == "layers":
            out.append(float(len(rows)))
        elif n == "gflops":
            from ..cost import cost

            out.append(float(cost(spec).flops) / 1e9)
        elif n == "act_mb":
            out.append(math.fsum(_act_bytes(e) for _, e in spec_entries(spec)) / 2**20)
        else:
            raise TableError(f"unknown correction feature {n!r}; features: {', '.join(FEATURES)}")
    return out


def _act_bytes(e: Entry) -> float:
    """Float32 bytes a piece reads and writes as activations: its input, output and expanded tensors."""
    r_in, r_out = e.resolution, e.out_resolution if e.kind in ("stem", "layer") else e.resolution
    if e.kind == "classifier":
        return 4.0 * (e.in_channels + e.out_channels)
    if e.kind == "pool":
        return 4.0 * (e.in_channels * r_in * r_in + e.in_channels)
    total = e.in_channels * r_in * r_in + e.out_channels * r_out * r_out
    if e.kind == "layer" and e.expand_ratio != 1:
        mid = round(e.in_channels * e.expand_ratio)
        total += mid * (r_in * r_in + r_out * r_out)
    return 4.0 * total


def _check_correction(c: Any) -> None:
    keys = {"features", "coef", "members", "expected", "seed", "ridge", "fit"}
    if not isinstance(c, dict) or set(c) != keys:
        raise _err("correction", f"must be null or an object with {', '.join(sorted(keys))}")
    if not isinstance(c["features"], list) or not c["features"] or any(f not in FEATURES for f in c["features"]):
        raise _err("correction.features", f"must be a list of {', '.join(FEATURES)}")
    if c["coef"] is not None:
        if not isinstance(c["coef"], list) or len(c["coef"]) != len(c["features"]):
            raise _err("correction.coef", "must be null or one number per feature")
        for i, v in enumerate(c["coef"]):
            _seconds(v, f"correction.coef[{i}]", allow_negative=True)
    if not isinstance(c["members"], list):
        raise _err("correction.members", "must be a list")
    for i, m in enumerate(c["members"]):
        p = f"correction.members[{i}]"
        if not isinstance(m, dict) or not {"name", "fingerprint", "measured", "features"} <= set(m):
            raise _err(p, "must be an object with name, fingerprint, measured, features")
        _seconds(m["measured"], p + ".measured")
        if not isinstance(m["features"], list) or len(m["features"]) != len(c["features"]):
            raise _err(p + ".features", "must hold one number per feature")
    _int(c["expected"], "correction.expected")
    _int(c["seed"], "correction.seed")
    _seconds(c["ridge"], "correction.ridge")


def fit_correction(features: list[list[float]], measured: list[float], names=FEATURES,
                   ridge: float = DEFAULT_RIDGE) -> list[float]:
    """Coefficients ``c`` with ``c . features_i ~ measured_i`` (seconds): least squares on relative errors,
    a ``ridge`` towards the plain table (``sum`` 1, the rest 0) on standardised columns."""
    import numpy as np

    X = np.asarray(features, dtype=float)
    m = np.asarray(measured, dtype=float)
    if X.ndim != 2 or len(X) != len(m) or len(m) == 0:
        raise TableError("the correction needs one feature row per measured member")
    if len(m) < X.shape[1] + 1:
        raise TableError(f"the correction of {X.shape[1]} features needs at least {X.shape[1] + 1} measured members, "
                         f"got {len(m)}")
    if not np.all(m > 0):
        raise TableError("measured latencies must be > 0")
    target = m * 1e3  # ms, as the sum feature
    A = X / target[:, None]
    b = np.ones(len(m))
    prior = np.array([1.0 if n == "sum" else 0.0 for n in names])
    if ridge > 0:
        sd = A.std(axis=0)
        fallback = np.abs(A).mean(axis=0)
        sd = np.where(sd > 0, sd, np.where(fallback > 0, fallback, 1.0))
        P = np.sqrt(ridge) * np.diag(sd)
        A = np.vstack([A, P])
        b = np.concatenate([b, P @ prior])
    coef, *_ = np.linalg.lstsq(A, b, rcond=None)
    return [float(c) / 1e3 for c in coef]  # ms -> s per unit of feature


def predict(spec: Spec, table: LatencyTable) -> float:
    """Predicted seconds of one batch-1 forward pass of ``spec``: its entries summed, plus the overhead,
    or, once a correction is fitted (``nas-latency refit --members``), the correction on the layer sum."""
    rows = predict_breakdown(spec, table)
    c = table.correction
    if c is not None and c.get("coef"):
        return math.fsum(a * f for a, f in zip(c["coef"], spec_features(spec, table, rows, c["features"])))
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
