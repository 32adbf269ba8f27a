"""CPU inference speed of EfficientNet-B0 at 224: our module, its exports, and torchvision's.

    python benchmarks/bench_inference.py [--threads N] [--rounds R] [--default-malloc] [--profile]

Prints images/s at batch 1 and batch 32, and each figure as a ratio to our eager
module.  Variants: our eager module (``nas.build_model``); the same with BN folded
into the convs (``nas.export.fuse_bn``) and in channels-last memory format; the
exported Python file (``nas-export --format py``); TorchScript; onnxruntime; and
torchvision's ``efficientnet_b0`` when torchvision is installed.

Allocator: glibc returns large freed buffers to the kernel by default, and at batch
32 mapping and unmapping activation buffers costs about half the time here (see
shared/REFERENCE.md).  So the script re-executes itself with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736`` unless they are set
already or ``--default-malloc`` is given, and prints the setting it ran under.

Fairness on a shared machine: variants are timed round-robin (``--rounds``) and the
median per variant is reported, so a burst of load elsewhere hits all of them.
All variants run the same weights (seeded, BN calibrated: a freshly initialised
network's activations shrink towards 1e-14, which is not what real inference sees).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def _reexec_with_malloc_settings(argv: list[str]) -> None:
    if "--default-malloc" in argv or all(os.environ.get(k) == v for k, v in MALLOC.items()):
        return
    env = {**os.environ, **MALLOC}
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *argv], env)


def _malloc_line() -> str:
    vals = {k: os.environ.get(k) for k in MALLOC}
    if all(v is None for v in vals.values()):
        return "allocator: glibc defaults (large buffers are returned to the kernel after each use)"
    return "allocator: " + " ".join(f"{k}={v}" for k, v in vals.items() if v is not None) + \
           " (glibc keeps freed memory for reuse)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _reexec_with_malloc_settings(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads for every runtime")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the variants (the protocol's)")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per variant at batch 1 (a third at larger batches)")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    ap.add_argument("--default-malloc", action="store_true", help="keep glibc's default allocator settings")
    ap.add_argument("--profile", action="store_true", help="print the top ops of our eager module (torch.profiler)")
    ap.add_argument("--torchvision-from", metavar="DIR",
                    help="import torchvision from an unpacked wheel in DIR instead of site-packages; its C ops are not "
                         "loaded (a CUDA wheel's extension cannot load beside a CPU torch; efficientnet_b0 needs none)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import nas.export as ex
    from nas.build import build_model
    from nas.presets import load_spec

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    spec = load_spec("efficientnet-b0")
    res = args.resolution
    print(f"EfficientNet-B0 at {res}x{res}, CPU, {args.threads} threads, eval + no_grad, float32")
    print(f"torch {torch.__version__}; {_malloc_line()}")
    print("load average at start (1/5/15 min): " + " ".join(f"{v:.2f}" for v in os.getloadavg())
          + f" on {os.cpu_count()} CPUs (other work on the machine slows every variant)")
    print(f"command: python benchmarks/bench_inference.py {' '.join(argv)}".rstrip())

    t0 = time.perf_counter()
    ours = ex.initialized_model(spec).eval()
    state = ours.state_dict()
    variants: dict[str, callable] = {}
    notes: list[str] = []

    def no_grad(module):
        def run(x):
            with torch.no_grad():
                return module(x)
        return run

    variants["ours, eager"] = no_grad(ours)
    fused = ex.fuse_bn(ours)
    variants["ours, BN folded"] = no_grad(fused)
    fused_cl = ex.optimize_for_inference(ours, channels_last=True)
    variants["ours, BN folded + channels-last"] = lambda x, m=no_grad(fused_cl): m(x.contiguous(memory_format=torch.channels_last))

    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-"))
    code_path = tmp / "b0_exported.py"
    code_path.write_text(ex.export_python(spec, class_name="B0"))
    sys.path.insert(0, str(tmp))
    import b0_exported  # noqa: E402

    exported = b0_exported.B0()
    exported.load_state_dict(state, strict=True)
    variants["exported Python file"] = no_grad(exported.eval())

    ts_report = ex.export_torchscript(spec, tmp / "b0.pt", weights=state, resolution=res)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(tmp / "b0.pt")).eval()
    variants["TorchScript"] = no_grad(scripted)

    try:
        onnx_report = ex.export_onnx(spec, tmp / "b0.onnx", weights=state, resolution=res)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(tmp / "b0.onnx"), so, providers=["CPUExecutionProvider"])
        variants["onnxruntime"] = lambda x: sess.run(None, {"input": x.numpy()})[0]
        notes.append(f"onnxruntime {ort.__version__}, opset {onnx_report['opset']} ({onnx_report['exporter']} exporter), "
                     f"max |diff| vs PyTorch {onnx_report['max_abs_diff']:.1e}")
    except ex.MissingDependency as e:
        notes.append(f"onnxruntime skipped: {e}")

    try:
        if args.torchvision_from:
            import types

            sys.path.insert(0, args.torchvision_from)
            # Fake-kernel registrations for the C ops (nms, roi_align, ...) fail without the extension.
            sys.modules["torchvision._meta_registrations"] = types.ModuleType("torchvision._meta_registrations")
            warnings.filterwarnings("ignore", module="torchvision")
        import torchvision

        tv = torchvision.models.efficientnet_b0(weights=None)
        ex.calibrate_bn(tv, min(res, 128), 3)  # same treatment as ours: unit-scale activations
        variants["torchvision efficientnet_b0, eager"] = no_grad(tv.eval())
        notes.append(f"torchvision {torchvision.__version__}"
                     + (f" imported from {args.torchvision_from} (not installed)" if args.torchvision_from else "")
                     + ", random weights with calibrated BN statistics, like ours")
    except (ImportError, RuntimeError, OSError) as e:
        if args.torchvision_from:
            notes.append(f"torchvision could not be imported from {args.torchvision_from}: {type(e).__name__}: {e}")
        else:
            notes.append("torchvision is not installed: its efficientnet_b0 was skipped "
                         "(REFERENCE.md measured it on this kind of machine: batch 1 28-40 img/s, batch 32 62 img/s "
                         "with the same allocator settings)")
    notes.append(f"TorchScript by torch.jit.{ts_report['method']}, max |diff| vs PyTorch {ts_report['max_abs_diff']:.1e}")

    # All variants compute the same function (checked once, before timing).
    x1 = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(0))
    ref = variants["ours, eager"](x1).numpy()
    for name, fn in variants.items():
        if name.startswith("torchvision"):
            continue
        diff = float(np.abs(np.asarray(fn(x1)) - ref).max())
        assert diff <= 1e-3, (name, diff)
    print(f"setup (export, checks): {time.perf_counter() - t0:.1f} s")

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for b in batches:
            x = torch.randn(b, 3, res, res)
            for fn in (variants["ours, eager"], variants["ours, BN folded + channels-last"]):
                fn(x)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    fn(x)
                print(f"\nprofile at batch {b}:")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))

    # the one latency protocol (nas.latency.Protocol): pinned, GC off, warm-ups, interleaved rounds over the
    # variants (a burst of load hits all of them), the inter-quartile mean with its spread
    from nas.latency import Protocol, load_record, time_callables

    load_before = load_record()
    timings = {}
    protocol = None
    for b in batches:
        x = torch.randn(b, 3, res, res)
        protocol = Protocol(threads=args.threads, warmup=3 if b == 1 else 1, rounds=args.rounds,
                            runs=args.runs if b == 1 else max(args.rounds, args.runs // 3))
        ts, _ = time_callables([(lambda fn=fn: fn(x)) for fn in variants.values()], protocol)
        for name, t in zip(variants, ts):
            timings[(name, b)] = t
    base = {b: timings[("ours, eager", b)].seconds for b in batches}
    width = max(len(n) for n in variants)
    print()
    head = f"{'variant':<{width}} " + "  ".join(f"{f'b={b} img/s':>11} {'ratio':>6} {'spread':>7}" for b in batches)
    print(head)
    print("-" * len(head))
    for name in variants:
        cells = []
        for b in batches:
            t = timings[(name, b)]
            cells.append(f"{b / t.seconds:>11.1f} {base[b] / t.seconds:>5.2f}x {t.rel_spread:>7.1%}")
        print(f"{name:<{width}} " + "  ".join(cells))
    print()
    print(f"img/s from the inter-quartile mean; spread = (Q3 - Q1) / median; protocol: {protocol.describe()} "
          f"(batch 1; larger batches: a third of the runs); ratio = speed relative to 'ours, eager'")
    for n in notes:
        print("- " + n)
    la = load_record()
    print(f"load average before {load_before['load1']:.2f}, at end {la['load1']:.2f} (1 min) on {la['cores']} CPUs")
    print(f"total time: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
