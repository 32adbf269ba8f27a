"""The one latency measurement protocol: what every table, validation, search and benchmark times with.

::

    from nas.latency import Protocol, time_callables
    p = Protocol()                                   # 1 thread, pinned, 10 warm-ups, 30 runs in 3 rounds, IQR mean
    timings, ref = time_callables([run_a, run_b], p, reference=run_ref)
    timings[0].seconds, timings[0].rel_spread        # the statistic, (Q3 - Q1) / median

The protocol (:class:`Protocol`, frozen, recorded with :meth:`Protocol.to_dict` in every table and
result):

* **one thread** (``threads``) and the process **pinned** (``os.sched_setaffinity``) to one core
  (``core``: -1, the default, is the last core this process may use; ``None`` does not pin); the
  affinity is restored afterwards;
* **garbage collection off** while timing (``gc_off``), restored afterwards (BRP-NAS/Eagle);
* ``warmup`` untimed passes per callable (nn-Meter: 10), then ``runs`` timed passes per callable
  (nn-Meter: 50; here 30) split over ``rounds`` **interleaved rounds**: in each round every callable
  runs one block of passes (after ``block_warmup`` untimed ones), in an order rotated from round to
  round, with ``pause`` seconds between rounds.  A burst of load or a slow drift hits every callable
  alike instead of whichever was being timed;
* the **inter-quartile mean** (``statistic="iqr_mean"``; BRP-NAS/Eagle's statistic: the mean of the
  middle half of the sorted times) with its spread (IQR and IQR / median); ``median`` and
  ``min_block_median`` (the smallest of the rounds' medians) are the alternatives;
* **duet** normalisation (``duet=True``): a reference model is timed in every round beside the
  members; each pass is divided by the reference's median in the same round and multiplied by a
  baseline (the reference's own statistic, or a stored one), so the machine's drift between rounds
  and between passes cancels.  The raw figure is kept beside the normalised one.
* on a GPU a callable times itself (CUDA events around a synchronised pass: :class:`Pass` with
  ``self_timed``); the statistics are the same.

Every measurement also records the machine's **load** (:func:`load_record`) before and after; a
study refuses to start on a busy machine (:func:`check_load`, :class:`BusyMachine`).

Prior art read for this: nn-Meter times kernels with the benchmark binary pinned by ``taskset`` to
the big cores, one thread, 10 warm-ups, 50 runs, frequency fixed; BRP-NAS/Eagle (desktop) time 100
runs of 10 inferences with 10 ms sleeps between runs, Python GC off, and take the inter-quartile mean
within and across runs.  Torch-free to import.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

__all__ = ["Protocol", "STATISTICS", "Pass", "Timing", "time_callables", "iqr_mean", "summarise", "round_order",
           "pinned", "gc_paused", "measuring", "load_record", "check_load", "BusyMachine", "DEFAULT_MAX_LOAD"]

STATISTICS = ("iqr_mean", "median", "min_block_median")
CLOCK_NAMES = ("wall", "cpu")


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured (see the module doc); ``to_dict`` is what tables and results record."""

    threads: int = 1
    core: int | None = -1          # -1: the last core this process may run on; None: no pinning
    warmup: int = 10               # untimed passes per callable before the first round
    runs: int = 30                 # timed passes per callable, split over the rounds
    rounds: int = 3                # interleaved rounds (blocks)
    block_warmup: int = 1          # untimed passes at the start of every block
    statistic: str = "iqr_mean"    # one of STATISTICS
    duet: bool = False             # normalise by a reference model timed in every round
    gc_off: bool = True
    pause: float = 0.0             # seconds slept between rounds
    clock: str = "wall"            # wall (time.perf_counter) or cpu (time.thread_time, one thread)
    evict_bytes: int = 0           # CPU backends: a cache sweep before every timed pass (untimed)
    batch: int = 1

    def __post_init__(self):
        for k, lo in (("threads", 1), ("warmup", 0), ("runs", 1), ("rounds", 1), ("block_warmup", 0),
                      ("evict_bytes", 0), ("batch", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"protocol.{k}: must be an integer >= {lo}, got {v!r}")
        if self.core is not None and (isinstance(self.core, bool) or not isinstance(self.core, int)
                                      or self.core < -1):
            raise ValueError(f"protocol.core: must be -1 (the last allowed core), a core number or null, got {self.core!r}")
        if self.statistic not in STATISTICS:
            raise ValueError(f"protocol.statistic: must be one of {', '.join(STATISTICS)}, got {self.statistic!r}")
        if self.clock not in CLOCK_NAMES:
            raise ValueError(f"protocol.clock: must be wall or cpu, got {self.clock!r}")
        if not isinstance(self.pause, (int, float)) or isinstance(self.pause, bool) or not 0 <= self.pause < 60:
            raise ValueError(f"protocol.pause: must be seconds in [0, 60), got {self.pause!r}")
        if not isinstance(self.duet, bool) or not isinstance(self.gc_off, bool):
            raise ValueError("protocol.duet and protocol.gc_off: must be true or false")

    @property
    def effective_rounds(self) -> int:
        return min(self.rounds, self.runs)

    def block_sizes(self) -> list[int]:
        """Timed passes per round: ``runs`` split as evenly as possible, the first rounds taking the rest."""
        r = self.effective_rounds
        q, rest = divmod(self.runs, r)
        return [q + (1 if i < rest else 0) for i in range(r)]

    def to_dict(self) -> dict:
        return {"version": 2, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        """A recorded protocol; a table of format version 1 recorded ``{"batch", "warmup", "runs", "statistic":
        "median", "clock", "evict_bytes"}``: read as what it was (one round, median, no pinning, GC untouched)."""
        if not isinstance(d, dict):
            raise ValueError("a protocol must be an object")
        if d.get("version") != 2:  # the old protocol
            known = {"batch", "warmup", "runs", "statistic", "clock", "evict_bytes"}
            unknown = sorted(set(d) - known)
            if unknown:
                raise ValueError(f"protocol.{unknown[0]}: unknown field")
            return cls(threads=1, core=None, warmup=d.get("warmup", 5), runs=d.get("runs", 15), rounds=1,
                       block_warmup=0, statistic=d.get("statistic", "median"), duet=False, gc_off=False,
                       clock=d.get("clock", "wall"), evict_bytes=d.get("evict_bytes", 0), batch=d.get("batch", 1))
        names = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - names - {"version"})
        if unknown:
            raise ValueError(f"protocol.{unknown[0]}: unknown field")
        return cls(**{k: v for k, v in d.items() if k != "version"})

    def describe(self) -> str:
        pin = "unpinned" if self.core is None else ("pinned" if self.core == -1 else f"core {self.core}")
        return (f"{self.threads} thread(s), {pin}, {self.warmup} warm-ups, {self.runs} runs in "
                f"{self.effective_rounds} interleaved rounds, {self.statistic.replace('_', ' ')}"
                f"{', duet-normalised' if self.duet else ''}{', GC off' if self.gc_off else ''}, {self.clock} clock")


# ---------------------------------------------------------------- statistics


def iqr_mean(xs: Sequence[float]) -> float:
    """The inter-quartile mean: sorted, the lowest and highest ``n // 4`` dropped, the rest averaged."""
    s = sorted(xs)
    if not s:
        raise ValueError("no values")
    k = len(s) // 4
    mid = s[k:len(s) - k]
    return math.fsum(mid) / len(mid)


def _quartiles(xs: Sequence[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def summarise(rounds: Sequence[Sequence[float]], statistic: str = "iqr_mean",
              ref_rounds: Sequence[float] | None = None, baseline: float | None = None) -> float:
    """One figure from per-round times; with ``ref_rounds`` (the reference's median per round) and a
    ``baseline``, each time is first normalised: ``t / ref_rounds[r] * baseline``."""
    if ref_rounds is not None:
        if baseline is None:
            raise ValueError("duet normalisation needs a baseline")
        rounds = [[t / ref * baseline for t in ts] for ts, ref in zip(rounds, ref_rounds)]
    flat = [t for ts in rounds for t in ts]
    if statistic == "iqr_mean":
        return iqr_mean(flat)
    if statistic == "median":
        return statistics.median(flat)
    if statistic == "min_block_median":
        return min(statistics.median(ts) for ts in rounds if ts)
    raise ValueError(f"unknown statistic {statistic!r}; statistics: {', '.join(STATISTICS)}")


@dataclass
class Timing:
    """One callable's measurement: the protocol's figure, the raw one, the spread and every timed pass."""

    seconds: float                 # the protocol's statistic (duet-normalised when the protocol says so)
    raw_seconds: float             # the statistic on the raw times
    median: float
    iqr: float                     # Q3 - Q1 of the raw times
    rel_spread: float              # iqr / median
    rounds: list                   # per round, the block's raw times (seconds)
    ref_rounds: list | None = None  # per round, the reference's median (duet)
    baseline: float | None = None   # the reference time the normalised figure is scaled to

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Timing":
        return cls(**d)

    def figure(self, statistic: str, duet: bool) -> float:
        """The same passes summarised another way (for comparing statistics on one set of measurements)."""
        if duet and self.ref_rounds is None:
            raise ValueError("no reference was timed")
        return summarise(self.rounds, statistic, self.ref_rounds if duet else None, self.baseline if duet else None)


def _timing(rounds: list[list[float]], protocol: Protocol, ref_rounds=None, baseline=None) -> Timing:
    flat = sorted(t for ts in rounds for t in ts)
    med = statistics.median(flat)
    q1, q3 = _quartiles(flat)
    raw = summarise(rounds, protocol.statistic)
    seconds = summarise(rounds, protocol.statistic, ref_rounds, baseline) if ref_rounds is not None else raw
    return Timing(seconds=seconds, raw_seconds=raw, median=med, iqr=q3 - q1, rel_spread=(q3 - q1) / med if med else 0.0,
                  rounds=[list(ts) for ts in rounds], ref_rounds=list(ref_rounds) if ref_rounds is not None else None,
                  baseline=baseline)


# ---------------------------------------------------------------- the process: cores, GC, threads


def _pick_cores(allowed: set[int], protocol: Protocol) -> set[int]:
    cores = sorted(allowed)
    n = min(protocol.threads, len(cores))
    if protocol.core == -1:
        return set(cores[-n:])
    start = cores.index(protocol.core) if protocol.core in allowed else None
    if start is None:
        raise ValueError(f"core {protocol.core} is not one this process may run on ({', '.join(map(str, cores))})")
    picked = cores[start:start + n]
    return set(picked if len(picked) == n else cores[-n:])


@contextlib.contextmanager
def pinned(protocol: Protocol):
    """Pin this process (its calling thread and the threads it starts) to the protocol's core(s), restored
    afterwards; yields the cores (or None when not pinning, or where the OS has no affinity call)."""
    if protocol.core is None or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    old = os.sched_getaffinity(0)
    cores = _pick_cores(old, protocol)
    os.sched_setaffinity(0, cores)
    try:
        yield sorted(cores)
    finally:
        os.sched_setaffinity(0, old)


@contextlib.contextmanager
def gc_paused(off: bool = True):
    """Garbage collection off (after one collection) inside, restored to what it was afterwards."""
    was = gc.isenabled()
    if off:
        gc.collect()
        gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        else:
            gc.disable()


@contextlib.contextmanager
def measuring(protocol: Protocol):
    """The process set up for timing: pinned, torch's thread count fixed and autograd off (when torch is
    loaded); everything restored afterwards.  Yields the cores."""
    torch = sys.modules.get("torch")
    with pinned(protocol) as cores:
        if torch is None:
            yield cores
            return
        old, grad = torch.get_num_threads(), torch.is_grad_enabled()
        torch.set_num_threads(protocol.threads)
        torch.set_grad_enabled(False)
        try:
            yield cores
        finally:
            torch.set_num_threads(old)
            torch.set_grad_enabled(grad)


# ---------------------------------------------------------------- timing


@dataclass
class Pass:
    """One pass of something timed: ``run()``; ``before()`` runs untimed before every timed pass (a cache
    sweep); with ``self_timed``, ``run()`` returns its own seconds (CUDA events) instead of being clocked."""

    run: Callable[[], Any]
    before: Callable[[], None] | None = None
    self_timed: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict)


def _as_pass(f) -> Pass:
    return f if isinstance(f, Pass) else Pass(run=f)


def round_order(n: int, r: int) -> list[int]:
    """The order of ``n`` callables in round ``r``: rotated by ``r``, so that none always goes first or
    always follows the same one."""
    return [(r + i) % n for i in range(n)]


def _clock(name: str):
    return {"wall": time.perf_counter, "cpu": time.thread_time}[name]


def _block(p: Pass, k: int, warm: int, clock) -> list[float]:
    for _ in range(warm):
        p.run()
    out = []
    for _ in range(k):
        if p.before is not None:
            p.before()
        if p.self_timed:
            out.append(float(p.run()))
        else:
            t0 = clock()
            p.run()
            out.append(clock() - t0)
    return out


def time_callables(fns: Sequence, protocol: Protocol, *, reference=None, reference_seconds: float | None = None,
                   sleep: Callable[[float], None] = time.sleep, on_round: Callable[[int], None] | None = None,
                   setup: bool = True) -> tuple[list[Timing], Timing | None]:
    """Time ``fns`` (callables or :class:`Pass`) in interleaved rounds; returns one :class:`Timing` per
    callable, and the reference's (or None).

    With ``reference`` (a callable timed first in every round) and ``protocol.duet``, each callable's
    ``seconds`` is normalised by it, scaled to ``reference_seconds`` (default: the reference's own
    statistic here).  The reference is timed whenever given, so the raw and the normalised figure can
    be compared on the same passes.  ``setup=False``: the caller has already entered :func:`measuring`.
    """
    passes = [_as_pass(f) for f in fns]
    if not passes:
        return [], None
    ref = _as_pass(reference) if reference is not None else None
    clock = _clock(protocol.clock)
    sizes = protocol.block_sizes()
    times: list[list[list[float]]] = [[] for _ in passes]
    ref_times: list[list[float]] = []
    ctx = measuring(protocol) if setup else contextlib.nullcontext()
    with ctx, gc_paused(protocol.gc_off):
        for p in ([ref] if ref is not None else []) + passes:
            for _ in range(protocol.warmup):
                p.run()
        for r, k in enumerate(sizes):
            if r and protocol.pause:
                sleep(protocol.pause)
            if ref is not None:
                ref_times.append(_block(ref, k, protocol.block_warmup, clock))
            for i in round_order(len(passes), r):
                times[i].append(_block(passes[i], k, protocol.block_warmup, clock))
            if on_round is not None:
                on_round(r)
    ref_timing = None
    ref_rounds = None
    baseline = None
    if ref is not None:
        ref_timing = _timing(ref_times, protocol)
        ref_rounds = [statistics.median(ts) for ts in ref_times]
        baseline = reference_seconds if reference_seconds is not None else ref_timing.raw_seconds
        ref_timing.baseline = baseline
    out = []
    for ts in times:
        t = _timing(ts, protocol)
        if ref is not None:
            t.ref_rounds, t.baseline = ref_rounds, baseline
            if protocol.duet:
                t.seconds = summarise(ts, protocol.statistic, ref_rounds, baseline)
        out.append(t)
    return out, ref_timing


# ---------------------------------------------------------------- the machine's load

DEFAULT_MAX_LOAD = 0.5  # other work allowed, in runnable processes on average (the 1-minute load average)
_SAMPLES: list[tuple[float, float]] = []  # (wall, own CPU seconds) at each load_record, for the own share


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


_SAMPLES.append((time.monotonic(), _own_cpu()))


def _own_share(now: float, cpu: float) -> float:
    """This process's (and its finished children's) CPU use over about the last minute, in cores."""
    past = [s for s in _SAMPLES if now - s[0] >= 5.0]
    if not past:
        return 0.0
    t0, c0 = min(past, key=lambda s: abs(now - s[0] - 60.0))
    return max(0.0, (cpu - c0) / (now - t0))


def load_record() -> dict:
    """The machine's load now: the 1/5/15-minute load averages, the cores, this process's own share of the
    1-minute figure (its CPU use over about the last minute) and what is left: the other work."""
    now, cpu = time.monotonic(), _own_cpu()
    own = _own_share(now, cpu)
    _SAMPLES.append((now, cpu))
    del _SAMPLES[:-200]
    try:
        l1, l5, l15 = os.getloadavg()
    except (OSError, AttributeError):
        l1 = l5 = l15 = float("nan")
    others = max(0.0, l1 - own) if math.isfinite(l1) else float("nan")
    return {"load1": round(l1, 3), "load5": round(l5, 3), "load15": round(l15, 3), "cores": os.cpu_count() or 0,
            "own": round(own, 3), "others": round(others, 3), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class BusyMachine(RuntimeError):
    """Other work is running: latency measured now would be the other work's noise."""


def check_load(max_load: float = DEFAULT_MAX_LOAD, *, allow: bool = False, warn=None) -> dict:
    """The load now (:func:`load_record`); raises :class:`BusyMachine` (one line) when other work above
    ``max_load`` runs, unless ``allow`` or the environment's ``NAS_ALLOW_LOAD=1`` (then ``warn(message)`` is
    called, default: stderr)."""
    allow = allow or os.environ.get("NAS_ALLOW_LOAD") == "1"
    rec = load_record()
    others = rec["others"]
    if math.isfinite(others) and others > max_load:
        msg = (f"the machine is busy: load average {rec['load1']:.2f} on {rec['cores']} cores, about "
               f"{others:.2f} of it other work (> {max_load:g}); latency measured now is noise. Measure on an idle "
               f"machine, or pass --allow-load to measure anyway (the load is recorded)")
        if not allow:
            raise BusyMachine(msg)
        (warn or (lambda m: print(f"WARNING: {m}", file=sys.stderr)))(msg.split("; latency")[0] + "; measuring anyway "
                                                                       "(--allow-load)")
    return rec
