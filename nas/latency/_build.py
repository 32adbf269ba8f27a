"""Building a latency table: measure every entry, then fit the per-network overhead.

Resumable: the table is flushed (atomically) every ``flush_seconds`` and on
Ctrl-C; run again with the same output and set-up and only missing entries (and
missing fit networks) are measured.  ``limit`` bounds the entries measured in one
run, so a long table can be built in pieces.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Callable, Iterable

from ..spec import Spec
from ._backends import Backend, get_backend, machine
from ._keys import Entry
from ._table import LatencyTable, TableError

__all__ = ["check_environment", "check_same_setup", "space_members", "new_table", "measure_entry", "measure_network", "build_table", "fit_overhead", "measure_as_table"]


def space_members(space, n: int, seed: int, resolution: int, skeleton_first: bool = False) -> list[Spec]:
    """``n`` members of ``space`` at ``resolution``: its skeleton first if asked, then seeded random ones.

    The fit networks of ``nas-latency table`` (seed 0, skeleton first) and the members
    of ``nas-latency validate`` (seed 1) both come from here.
    """
    import random

    rng = random.Random(seed)
    out = [space.base.replace(resolution=resolution, name=space.skeleton)] if skeleton_first else []
    while len(out) < n:
        out.append(space.decode(space.sample(rng)).replace(resolution=resolution,
                                                             name=f"{space.name}-member-{len(out)}"))
    return out


def new_table(*, space: str, resolution: int, backend: Backend, threads: int, warmup: int, runs: int,
              clock: str = "wall", evict_bytes: int = 0, expected_entries: int, fit_networks: int, fit_model: str = "constant") -> LatencyTable:
    return LatencyTable(space=space, resolution=resolution, backend=backend.name, device=backend.device(),
                        threads=threads, machine=machine(), versions=backend.versions(),
                        protocol={"batch": 1, "warmup": warmup, "runs": runs, "statistic": "median", "clock": clock,
                                  "evict_bytes": evict_bytes},
                        expected_entries=expected_entries,
                        fit={"model": fit_model, "expected": fit_networks, "networks": []})


def check_same_setup(existing: LatencyTable, wanted: LatencyTable, path) -> None:
    """A table on disk may be continued only with the set-up it was started with."""
    a, b = existing.setup(), wanted.setup()
    diff = [k for k in a if a[k] != b[k]]
    if diff:
        k = diff[0]
        raise TableError(f"{path} is a latency table for another set-up ({k}: {a[k]} there, {b[k]} here); "
                         f"use another --output or the same options")


def check_environment(table: LatencyTable, backend: Backend) -> None:
    """Measuring here can only check (or extend) a table that was measured on this set-up."""
    here = {"backend": backend.name, "device": backend.device(), "cpu": machine()["cpu"],
            "versions": backend.versions()}
    there = {"backend": table.backend, "device": table.device, "cpu": table.machine.get("cpu"),
             "versions": table.versions}
    for k in here:
        if here[k] != there[k]:
            raise TableError(f"the table was measured on another set-up ({k}: {there[k]} there, {here[k]} here)")


def measure_entry(entry: Entry, backend: Backend, *, threads: int, warmup: int, runs: int,
                  clock: str = "wall", evict_bytes: int = 0) -> float:
    """Median seconds of ``entry`` alone, as the builder makes it, at batch 1."""
    from ._modules import entry_module

    module, x = entry_module(entry)
    return statistics.median(backend.measure(module, x, threads=threads, warmup=warmup, runs=runs, clock=clock,
                                             evict_bytes=evict_bytes))


def measure_network(spec: Spec, backend: Backend, *, threads: int, warmup: int, runs: int, clock: str = "wall",
                    evict_bytes: int = 0, seed: int = 0) -> float:
    """Median seconds of the whole materialized ``spec`` at batch 1 (what a prediction is checked against)."""
    import torch

    from ..build import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec).eval()
        x = torch.randn(1, spec.in_channels, spec.resolution, spec.resolution)
    return statistics.median(backend.measure(model, x, threads=threads, warmup=warmup, runs=runs, clock=clock,
                                             evict_bytes=evict_bytes))


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from ..progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="entry", dynamic_ncols=True, leave=False)


def build_table(table: LatencyTable, entries: dict[str, Entry], backend: Backend, *, path: str | Path | None = None,
                limit: int | None = None, flush_seconds: float = 30.0, progress: bool = False,
                on_entry: Callable[[str, float], None] | None = None) -> int:
    """Measure the entries ``table`` lacks (at most ``limit``); returns how many were measured.

    ``table`` is changed in place and written to ``path`` every ``flush_seconds``,
    at the end and when interrupted.
    """
    todo = [k for k in entries if k not in table.entries]
    if limit is not None:
        todo = todo[:limit]
    warmup, runs = table.protocol["warmup"], table.protocol["runs"]
    bar = _bar(len(todo), "latency table", progress)
    last = time.monotonic()
    done = 0
    try:
        for key in todo:
            table.entries[key] = measure_entry(entries[key], backend, threads=table.threads, warmup=warmup, runs=runs,
                                               clock=table.protocol["clock"],
                                               evict_bytes=table.protocol["evict_bytes"])
            done += 1
            if on_entry is not None:
                on_entry(key, table.entries[key])
            if bar is not None:
                bar.update(1)
            if path is not None and time.monotonic() - last > flush_seconds:
                table.save(path)
                last = time.monotonic()
    finally:
        if bar is not None:
            bar.close()
        if path is not None and done:
            table.save(path)  # also on Ctrl-C: what was measured is kept
    return done


def fit_overhead(table: LatencyTable, networks: Iterable[Spec], backend: Backend, *, path: str | Path | None = None,
                 progress: bool = False) -> float | None:
    """Measure the fit networks the table lacks, then fit the table's overhead (and scale).

    Least squares for a constant c in ``measured_i ~ sum_i + c`` is the mean of
    ``measured_i - sum_i``; ``fit.model == "affine"`` fits ``a * sum_i + c``.  Every
    entry of every network must be in the table.  Returns the overhead, or None
    while networks are missing.
    """
    from ._table import predict_breakdown

    networks = list(networks)
    table.fit["expected"] = len(networks)
    have = {n["fingerprint"] for n in table.fit["networks"]}
    todo = [s for s in networks if s.fingerprint() not in have]
    warmup, runs = table.protocol["warmup"], table.protocol["runs"]
    bar = _bar(len(todo), "overhead fit", progress)
    try:
        for spec in todo:
            total = math.fsum(s for _, _, s in predict_breakdown(spec, table))
            measured = measure_network(spec, backend, threads=table.threads, warmup=warmup, runs=runs,
                                       clock=table.protocol["clock"], evict_bytes=table.protocol["evict_bytes"])
            table.fit["networks"].append({"name": spec.name, "fingerprint": spec.fingerprint(), "measured": measured,
                                          "sum": total})
            if bar is not None:
                bar.update(1)
            if path is not None:
                table.save(path)
    finally:
        if bar is not None:
            bar.close()
    fitted = table.fit["networks"]
    if len(fitted) < len(networks) or not fitted:
        return None
    table.refit()
    if path is not None:
        table.save(path)
    return table.overhead


def measure_as_table(spec: Spec, table) -> float:
    """Median seconds of ``spec`` measured on the table's backend with the table's protocol: what its
    predictions are checked against (a search with ``--latency-table`` measures its best this way)."""
    p = table.protocol
    return measure_network(spec, get_backend(table.backend), threads=table.threads, warmup=p["warmup"],
                           runs=p["runs"], clock=p.get("clock", "wall"), evict_bytes=p.get("evict_bytes", 0))
