"""Building a latency table: measure every entry, then fit the per-network overhead.

Every measurement goes through the one protocol (:mod:`nas.latency._protocol`, the table's
``protocol``): entries are timed in interleaved chunks of :data:`CHUNK`, whole networks in chunks
of :data:`NET_CHUNK` (with the reference model when the protocol is duet-normalised).

Resumable: the table is flushed (atomically) every ``flush_seconds`` and on
Ctrl-C; run again with the same output and set-up and only missing entries (and
missing fit networks) are measured.  ``limit`` bounds the entries measured in one
run, so a long table can be built in pieces.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

from ..spec import Spec
from ._backends import Backend, get_backend, machine
from ._keys import Entry
from ._protocol import Protocol, Timing, time_callables
from ._table import LatencyTable, TableError

__all__ = ["check_environment", "check_same_setup", "space_members", "new_table", "measure_entry", "measure_network",
           "measure_networks", "network_pass", "reference_spec", "build_table", "fit_overhead", "measure_as_table",
           "CHUNK", "NET_CHUNK"]

CHUNK = 16      # entries timed together, interleaved
NET_CHUNK = 10  # whole networks timed together, interleaved (and with the reference, duet)


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


def new_table(*, space: str, resolution: int, backend: Backend, threads: int = 1, warmup: int = 10, runs: int = 30,
              clock: str = "wall", evict_bytes: int = 0, expected_entries: int, fit_networks: int,
              fit_model: str = "constant", protocol: Protocol | None = None) -> LatencyTable:
    """An empty table; measured with ``protocol`` (default: :class:`Protocol` with the other arguments)."""
    if protocol is None:
        protocol = Protocol(threads=threads, warmup=warmup, runs=runs, clock=clock, evict_bytes=evict_bytes)
    return LatencyTable(space=space, resolution=resolution, backend=backend.name, device=backend.device(),
                        threads=protocol.threads, machine=machine(), versions=backend.versions(),
                        protocol=protocol.to_dict(), expected_entries=expected_entries,
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


def _protocol_of(threads, warmup, runs, clock, evict_bytes, protocol) -> Protocol:
    if protocol is not None:
        return protocol
    return Protocol(threads=threads, warmup=warmup, runs=runs, clock=clock, evict_bytes=evict_bytes)


def measure_entry(entry: Entry, backend: Backend, *, threads: int = 1, warmup: int = 10, runs: int = 30,
                  clock: str = "wall", evict_bytes: int = 0, protocol: Protocol | None = None) -> float:
    """Seconds of ``entry`` alone, as the builder makes it, at batch 1 (the protocol's statistic)."""
    from ._modules import entry_module

    p = _protocol_of(threads, warmup, runs, clock, evict_bytes, protocol)
    backend.timer(p.clock, p.threads)
    module, x = entry_module(entry)
    (t,), _ = time_callables([backend.runner(module, x, threads=p.threads, evict_bytes=p.evict_bytes)], p)
    return t.seconds


def network_pass(spec: Spec, backend: Backend, *, threads: int, evict_bytes: int = 0, seed: int = 0):
    """The whole materialized ``spec`` at batch 1 as a pass of ``backend`` (seeded weights and input)."""
    import torch

    from ..build import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(spec).eval()
        x = torch.randn(1, spec.in_channels, spec.resolution, spec.resolution)
    p = backend.runner(model, x, threads=threads, evict_bytes=evict_bytes)
    p.name = spec.name or spec.fingerprint()
    return p


def reference_spec(space_or_spec, resolution: int | None = None) -> Spec:
    """The duet reference: the space's skeleton (its baseline member) at ``resolution``."""
    if isinstance(space_or_spec, Spec):
        return space_or_spec
    base = space_or_spec.base
    return base.replace(resolution=resolution or base.resolution, name=f"{space_or_spec.skeleton}-reference")


def measure_networks(specs: list[Spec], backend: Backend, protocol: Protocol, *, reference: Spec | None = None,
                     reference_seconds: float | None = None, seed: int = 0) -> tuple[list[Timing], Timing | None]:
    """Every spec of ``specs`` timed together (interleaved rounds), with ``reference`` timed in every round
    (duet, :func:`nas.latency.time_callables`)."""
    backend.timer(protocol.clock, protocol.threads)
    passes = [network_pass(s, backend, threads=protocol.threads, evict_bytes=protocol.evict_bytes, seed=seed)
              for s in specs]
    ref = (network_pass(reference, backend, threads=protocol.threads, evict_bytes=protocol.evict_bytes, seed=seed)
           if reference is not None else None)
    return time_callables(passes, protocol, reference=ref, reference_seconds=reference_seconds)


def measure_network(spec: Spec, backend: Backend, *, threads: int = 1, warmup: int = 10, runs: int = 30,
                    clock: str = "wall", evict_bytes: int = 0, seed: int = 0, protocol: Protocol | None = None) -> float:
    """Seconds of the whole materialized ``spec`` at batch 1 (the protocol's statistic, no reference)."""
    p = _protocol_of(threads, warmup, runs, clock, evict_bytes, protocol)
    (t,), _ = measure_networks([spec], backend, p, seed=seed)
    return t.seconds


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
    from ._modules import entry_module

    todo = [k for k in entries if k not in table.entries]
    if limit is not None:
        todo = todo[:limit]
    protocol = table.measure_protocol()
    backend.timer(protocol.clock, protocol.threads)
    bar = _bar(len(todo), "latency table", progress)
    last = time.monotonic()
    done = 0
    try:
        for c in range(0, len(todo), CHUNK):
            keys = todo[c:c + CHUNK]
            passes = [backend.runner(*entry_module(entries[k]), threads=protocol.threads,
                                     evict_bytes=protocol.evict_bytes) for k in keys]
            timings, _ = time_callables(passes, protocol)
            del passes
            for key, t in zip(keys, timings):
                table.entries[key] = t.seconds
                done += 1
                if on_entry is not None:
                    on_entry(key, table.entries[key])
            if bar is not None:
                bar.update(len(keys))
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
    protocol = table.measure_protocol()
    bar = _bar(len(todo), "overhead fit", progress)
    try:
        for c in range(0, len(todo), NET_CHUNK):
            chunk = todo[c:c + NET_CHUNK]
            timings, _ = measure_networks(chunk, backend, protocol)  # raw: the table's entries are not normalised
            for spec, t in zip(chunk, timings):
                total = math.fsum(s for _, _, s in predict_breakdown(spec, table))
                table.fit["networks"].append({"name": spec.name, "fingerprint": spec.fingerprint(),
                                              "measured": t.seconds, "sum": total})
            if bar is not None:
                bar.update(len(chunk))
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


def measure_as_table(spec: Spec, table, *, reference: Spec | None = None) -> float:
    """Seconds of ``spec`` measured on the table's backend with the table's protocol: what its predictions
    are checked against (a search with ``--latency-table`` measures its best this way).  A duet protocol
    times the table's reference (default: the space's skeleton) beside it and scales to the table's stored
    reference time."""
    p = table.measure_protocol()
    backend = get_backend(table.backend)
    ref, ref_seconds = None, None
    if p.duet:
        ref = reference or _table_reference(table)
        ref_seconds = (table.reference or {}).get("seconds")
    (t,), _ = measure_networks([spec], backend, p, reference=ref, reference_seconds=ref_seconds)
    return t.seconds


def _table_reference(table) -> Spec:
    from search_spaces import get_space

    return reference_spec(get_space(table.space), table.resolution)
