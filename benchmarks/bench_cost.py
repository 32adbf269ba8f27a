"""Analytic cost model vs fvcore: time per spec, and the peak memory of building B7.

    python benchmarks/bench_cost.py [--presets efficientnet-b0 efficientnet-b7] [--out results/cost/benchmark.md]

For each preset: the analytic ``nas.cost(spec)`` time (median over repeated
batches of calls), the fvcore ``FlopCountAnalysis(...).total()`` time on the
already built model (median of a few runs, after one warm-up call whose time is
reported separately: fvcore's first call in a process is slower), the model's
build time, and the ratio fvcore / analytic (the aim is >= 1000x).  The peak
memory of building B7 is measured first, in a fresh subprocess (peak RSS after
importing torch, and after building).

Prints Markdown; ``--out`` also writes it (atomically) with the command line.
Both counts are checked to agree, so the figures compare equal work.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import textwrap
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nas.cost import cost  # noqa: E402
from nas.presets import load_preset  # noqa: E402
from nas.atomic import atomic_write_text  # noqa: E402


def time_analytic(spec, repeats: int = 7, target_s: float = 0.2) -> tuple[float, int]:
    """Median seconds per ``cost(spec)`` call over ``repeats`` batches sized to take ~target_s each."""
    n = 1
    while True:  # size a batch
        t = time.perf_counter()
        for _ in range(n):
            cost(spec)
        dt = time.perf_counter() - t
        if dt > target_s / 4 or n > 1_000_000:
            break
        n *= 2
    n = max(1, int(n * target_s / max(dt, 1e-9)))
    per_call = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            cost(spec)
        per_call.append((time.perf_counter() - t) / n)
    return statistics.median(per_call), n


def time_load(name: str, repeats: int = 7, n: int = 200) -> float:
    """Median seconds to parse and validate the preset's JSON (what a CLI call pays on top of cost())."""
    from nas.spec import Spec

    text = load_preset(name).to_json()
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n):
            Spec.from_json(text)
        runs.append((time.perf_counter() - t) / n)
    return statistics.median(runs)


def time_fvcore(spec, runs: int) -> dict:
    import torch

    from nas.build import build_model
    from nas.cost import fvcore_flops

    t = time.perf_counter()
    model = build_model(spec).eval()
    build_s = time.perf_counter() - t
    times, total = [], None
    for _ in range(runs + 1):  # the first call is a warm-up (reported apart)
        t = time.perf_counter()
        total = fvcore_flops(model, spec.resolution, spec.in_channels)
        times.append(time.perf_counter() - t)
    del model
    return {"build_s": build_s, "first_s": times[0], "median_s": statistics.median(times[1:]), "runs": runs,
            "flops": total, "threads": torch.get_num_threads()}


_PEAK = textwrap.dedent("""
    import resource, sys, time

    def hwm_kib():
        # VmHWM is this process's own peak RSS; ru_maxrss would also carry the parent's peak
        # across fork + exec on Linux.
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    import torch
    torch.set_num_threads({threads})
    from nas.build import build_model
    from nas.presets import load_preset
    spec = load_preset({name!r})
    base = hwm_kib()
    t = time.perf_counter()
    model = build_model(spec)
    dt = time.perf_counter() - t
    peak = hwm_kib()
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    print(base, peak, n, dt)
""")


def peak_build_memory(name: str, threads: int) -> dict:
    """Peak RSS (VmHWM, KiB) of a fresh process after importing torch, and after building ``name``."""
    r = subprocess.run([sys.executable, "-c", _PEAK.format(name=name, threads=threads)], capture_output=True,
                       text=True, check=True, cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    base, peak, tensor_bytes, dt = r.stdout.split()
    return {"base_mib": int(base) / 1024, "peak_mib": int(peak) / 1024, "tensors_mib": int(tensor_bytes) / 2**20,
            "build_s": float(dt)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["efficientnet-b0", "efficientnet-b7"])
    ap.add_argument("--fvcore-runs", type=int, nargs="+", default=None,
                    help="fvcore runs per preset (default: 7 for B0-sized, 3 for larger)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--peak-preset", default="efficientnet-b7")
    ap.add_argument("--out", help="also write the Markdown report here")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import fvcore

    mem = peak_build_memory(args.peak_preset, args.threads)
    rows = []
    for i, name in enumerate(args.presets):
        spec = load_preset(name)
        a_s, n = time_analytic(spec)
        load_s = time_load(name)
        c = cost(spec)
        runs = args.fvcore_runs[i] if args.fvcore_runs else (7 if c.flops < 2e9 else 3)
        fv = time_fvcore(spec, runs)
        if fv["flops"] != c.flops:
            raise SystemExit(f"{name}: analytic {c.flops} != fvcore {fv['flops']}")
        rows.append((name, spec.resolution, c.params, c.flops, a_s, n, load_s, fv))
        print(f"{name}: analytic {a_s * 1e6:.1f} us, fvcore {fv['median_s']:.3f} s "
              f"(ratio {fv['median_s'] / a_s:,.0f}x)", file=sys.stderr)

    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    lines = [
        "# Analytic cost model vs fvcore",
        "",
        f"Command: `python {' '.join(['benchmarks/bench_cost.py'] + list(argv if argv is not None else sys.argv[1:]))}`",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}, torch {torch.__version__} ({args.threads} thread), fvcore "
        f"{getattr(fvcore, '__version__', '?')}; load average at the end {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} (the machine is shared: absolute times vary, ratios hold).",
        "",
        "| preset | res | params | FLOPs | analytic `cost()` | spec JSON load | fvcore (median) | runs | fvcore first call "
        "| build | fvcore / analytic | (fvcore + build) / (load + analytic) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, res, params, flops, a_s, n, load_s, fv in rows:
        lines.append(
            f"| {name} | {res} | {params:,} | {flops:,} | {a_s * 1e6:.1f} µs (×{n} per batch, median of 7) "
            f"| {load_s * 1e6:.0f} µs | {fv['median_s']:.3f} s | {fv['runs']} | {fv['first_s']:.3f} s "
            f"| {fv['build_s']:.2f} s | **{fv['median_s'] / a_s:,.0f}×** "
            f"| {(fv['median_s'] + fv['build_s']) / (a_s + load_s):,.0f}× |")
    lines += [
        "",
        f"Peak memory of building {args.peak_preset} (fresh process, peak RSS `VmHWM`): "
        f"{mem['base_mib']:.0f} MiB after `import torch`, {mem['peak_mib']:.0f} MiB after `build_model` "
        f"(+{mem['peak_mib'] - mem['base_mib']:.0f} MiB; parameters and buffers are {mem['tensors_mib']:.0f} MiB "
        f"of float32), build time {mem['build_s']:.2f} s.",
        "",
        "The analytic count and fvcore's agree exactly for every row (the script stops otherwise).",
    ]
    report = "\n".join(lines) + "\n"
    sys.stdout.write(report)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        atomic_write_text(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
