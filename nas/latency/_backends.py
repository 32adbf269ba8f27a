"""Latency backends: where and how a module is timed.  A registry, :data:`BACKENDS`.

Contract (``tests/test_latency.py`` runs one suite against every registered backend):

* ``unavailable()`` -> ``None`` or a one-line reason (no GPU, package missing);
* ``device()`` -> what runs the module (``"cpu"``, ``"cuda:0 NVIDIA H200"``);
* ``versions()`` -> the library versions that decide the timings;
* ``runner(module, x, threads=, evict_bytes=)`` -> a :class:`nas.latency.Pass`: one forward
  pass, in eval mode without autograd, what the protocol (:mod:`nas.latency._protocol`) times;
* ``measure(module, x, threads=, warmup=, runs=, clock=)`` -> ``runs`` seconds of one
  forward pass each, after ``warmup`` untimed passes (the protocol on one callable),
  with the thread count fixed to ``threads`` and restored afterwards.

Clocks (:data:`CLOCKS`): ``wall`` (``time.perf_counter``; what a user waits) and
``cpu`` (``time.thread_time``: the CPU time of the calling thread, for one thread
only).  On a shared machine a wall-clock pass of a whole network is preempted far
more often than the short pass of one layer, so wall-clock tables only predict an
idle machine; measured here under load 11 on 2 cores, whole 32-px networks took
5-7x their layers' summed wall time but 1.2-1.9x their summed CPU time.  With
one thread the CPU clock is what the pass costs, preemption excluded.

Cache eviction (``evict_bytes``, CPU backends): inside a network a layer's weights
have been pushed out of the core's caches by the layers between two passes, while
its input was just written by the layer before; timed alone and repeated, a layer
finds both in cache.  With ``evict_bytes > 0`` every timed pass is preceded
(untimed) by a write sweep over a buffer of that size, then a read of the input.

Whole networks and table entries go through the same ``measure``, so a prediction
and the measurement it is checked against differ only in what is timed.
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import sys
import time
import warnings

__all__ = ["Backend", "BACKENDS", "CLOCKS", "get_backend", "BackendUnavailable", "machine"]

CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (no GPU, a package missing)."""


def machine() -> dict:
    """The CPU a measurement ran on (a table built elsewhere does not predict this machine)."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu or "unknown", "cores": os.cpu_count() or 0, "system": platform.system()}


@contextlib.contextmanager
def _torch_threads(n: int):
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Backend:
    name = ""

    def unavailable(self) -> str | None:
        return None

    def check(self) -> None:
        reason = self.unavailable()
        if reason:
            raise BackendUnavailable(f"backend {self.name}: {reason}")

    def device(self) -> str:
        return "cpu"

    def versions(self) -> dict:
        import torch

        return {"python": sys.version.split()[0], "torch": torch.__version__}

    cpu_clock = True  # whether the pass runs in the calling thread with one thread (the cpu clock is valid)

    def runner(self, module, x, *, threads: int, evict_bytes: int = 0):
        """One forward pass of ``module`` on ``x`` as a :class:`nas.latency.Pass` (what the protocol times)."""
        raise NotImplementedError

    def measure(self, module, x, *, threads: int, warmup: int, runs: int, clock: str = "wall",
                evict_bytes: int = 0, protocol=None) -> list[float]:
        """``runs`` seconds of one pass each, after ``warmup`` untimed passes: ``module`` alone timed with
        ``protocol`` (default: one block, no pinning, GC untouched: a plain loop), every pass in order."""
        from ._protocol import Protocol, time_callables

        if protocol is None:
            protocol = Protocol(threads=threads, core=None, warmup=warmup, runs=runs, rounds=1, block_warmup=0,
                                statistic="median", gc_off=False, clock=clock, evict_bytes=evict_bytes)
        self.timer(protocol.clock, protocol.threads)
        (t,), _ = time_callables([self.runner(module, x, threads=protocol.threads,
                                              evict_bytes=protocol.evict_bytes)], protocol)
        return [v for block in t.rounds for v in block]

    @staticmethod
    def evictor(evict_bytes: int, x):
        """An untimed step before each pass: evict the caches, then bring the input back (see the module doc)."""
        import numpy as np

        if evict_bytes <= 0:
            return lambda: None
        buf = np.zeros(max(1, evict_bytes // 8))
        xs = np.asarray(x)

        def evict() -> None:
            buf.__iadd__(1.0)  # a write sweep: every line of the buffer is pulled in and dirtied
            xs.sum()

        return evict

    def timer(self, clock: str, threads: int):
        if clock not in CLOCKS:
            raise ValueError(f"unknown clock {clock!r}; clocks: {', '.join(CLOCKS)}")
        if clock == "cpu" and not (self.cpu_clock and threads == 1):
            raise ValueError(f"the cpu clock times one thread: it needs --threads 1 and a CPU backend "
                             f"(backend {self.name}, {threads} threads)")
        return CLOCKS[clock]


class TorchCPU(Backend):
    """PyTorch eager on the CPU, ``torch.set_num_threads(threads)``."""

    name = "torch"

    def runner(self, module, x, *, threads, evict_bytes=0):
        import torch

        from ._protocol import Pass

        module = module.eval()

        def run():
            with torch.no_grad():
                module(x)

        return Pass(run=run, before=self.evictor(evict_bytes, x.numpy()) if evict_bytes > 0 else None)


class OnnxRuntimeCPU(Backend):
    """onnxruntime's CPU execution provider on the module exported by torch.onnx (legacy exporter).

    The runtime an exported model runs in; graph optimisations on (BN folded into
    convs, as in deployment), ``intra_op_num_threads = threads``, sequential execution.
    """

    name = "onnxruntime"

    def unavailable(self):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install nas-toolkit[export])"
        return None

    def versions(self):
        import onnxruntime

        return {**super().versions(), "onnxruntime": onnxruntime.__version__}

    def runner(self, module, x, *, threads, evict_bytes=0):
        import onnxruntime as ort
        import torch

        from ._protocol import Pass

        # with one intra-op thread onnxruntime runs in the caller's thread (the cpu clock is valid)
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the deprecation notice of the TorchScript-based exporter
            # legacy exporter: about 10x faster per layer than dynamo, and it keeps BN in eval mode
            torch.onnx.export(module.eval(), (x,), buf, dynamo=False, input_names=["input"],
                              output_names=["output"], do_constant_folding=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        feed = {"input": x.numpy()}
        return Pass(run=lambda: sess.run(None, feed),
                    before=self.evictor(evict_bytes, feed["input"]) if evict_bytes > 0 else None)


class TorchCUDA(Backend):
    """PyTorch eager on a GPU, timed with CUDA events around each synchronised pass."""

    name = "cuda"
    cpu_clock = False

    def unavailable(self):
        import torch

        if not torch.cuda.is_available():
            return "no CUDA device is available on this machine"
        return None

    def device(self):
        import torch

        i = torch.cuda.current_device()
        return f"cuda:{i} {torch.cuda.get_device_name(i)}"

    def versions(self):
        import torch

        return {**super().versions(), "cuda": torch.version.cuda or ""}

    def runner(self, module, x, *, threads, evict_bytes=0):
        import torch

        from ._protocol import Pass

        if evict_bytes:
            raise ValueError("cache eviction is for the CPU backends")
        module = module.eval().cuda()
        x = x.cuda()
        module(x)  # the first pass pays for cuDNN's algorithm choice
        torch.cuda.synchronize()

        def run() -> float:  # CUDA events around a synchronised pass; seconds
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            with torch.no_grad():
                start.record()
                module(x)
                end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        return Pass(run=run, self_timed=True)


BACKENDS: dict[str, Backend] = {b.name: b for b in (TorchCPU(), OnnxRuntimeCPU(), TorchCUDA())}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown latency backend {name!r}; backends: {', '.join(BACKENDS)}") from None
