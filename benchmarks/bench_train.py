"""Training throughput of EfficientNet-B0 at 32 px (or --resolution), batch 64, on this machine's CPU cores.

    python benchmarks/bench_train.py [--threads 1 2] [--steps 20] [--resolution 32]

Prints, for the default glibc allocator and for the tuned one
(``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736``, see REFERENCE.md),
each measured in a fresh subprocess:

* a float32 matmul peak (2048 x 2048, best of several), in GFLOP/s;
* training images/s of the bare step loop of :mod:`nas.train` (forward,
  label-smoothed loss, backward, RMSProp step; 10 classes), and the achieved
  GFLOP/s = analytic FLOPs at 32 px x 3 (forward + backward) x images/s;
* the same loop with model and batch in channels-last memory format (what
  :mod:`nas.train` uses), and its ratio to the default (contiguous) format;
* images/s that :func:`nas.train.train_and_evaluate` itself reports for 20
  steps on the embedded sample (its ``images_per_second`` excludes BN
  recalibration and evaluation).

Threads 1 and 2 are both measured (``--threads``); with 2, ``OMP_WAIT_POLICY=PASSIVE``
is set as ``nas-train`` does.  Other jobs on a shared machine change every
figure: the load average is printed before and after.

FLOP convention: the cost model's (fvcore's), one multiply-add = one flop; the
matmul peak is stated in the same unit (n^3 per n x n matmul), so the ratio is
the fraction of peak.  Figures, not assertions: nothing here fails on speed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "68719476736"}


def measure(threads: int, steps: int, resolution: int) -> dict:
    import torch

    from nas.cost import cost
    from nas.data import load_dataset
    from nas.presets import load_preset
    from nas.train import RECIPES, make_optimizer, train_and_evaluate
    from nas.build import build_model

    torch.set_num_threads(threads)
    # matmul peak, multiply-adds per second
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    peak = n ** 3 / best / 1e9

    spec = load_preset("efficientnet-b0").replace(num_classes=10, resolution=resolution)
    flops = cost(spec, resolution).flops
    rec = RECIPES["efficientnet"]
    crit = torch.nn.CrossEntropyLoss(label_smoothing=rec.label_smoothing)

    def loop(memory_format) -> float:
        """images/s of the bare training step with model and batch in ``memory_format``."""
        torch.manual_seed(0)
        model = build_model(spec).to(memory_format=memory_format)
        opt = make_optimizer(rec, model, rec.peak_lr(64))
        x = torch.randn(64, 3, resolution, resolution).contiguous(memory_format=memory_format)
        y = torch.randint(0, 10, (64,))
        model.train()

        def step():
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * 64 / (time.perf_counter() - t)

    loop_ips = loop(torch.contiguous_format)
    loop_cl_ips = loop(torch.channels_last)

    data = load_dataset("sample")
    r = train_and_evaluate(load_preset("efficientnet-b0"), data, steps=20, resolution=resolution, batch_size=64,
                           limit_val=500)
    return {"threads": threads, "matmul_gflops": peak, "flops_per_image": flops, "loop_images_per_second": loop_ips,
            "loop_gflops": 3 * flops * loop_ips / 1e9,
            "loop_channels_last_images_per_second": loop_cl_ips, "evaluator_images_per_second": r.images_per_second,
            "evaluator_seconds": r.seconds, "evaluator_accuracy": r.accuracy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=32, help="px (default 32; nas-search trains at 16)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.threads[0], args.steps, args.resolution)))
        return 0
    print(f"EfficientNet-B0 training at {args.resolution} px, batch 64, {os.cpu_count()} CPUs visible, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    print(f"{'threads':>7} {'allocator':<9} {'matmul GF/s':>11} {'loop img/s':>10} {'loop GF/s':>9} {'% peak':>6} "
          f"{'channels-last img/s':>19} {'evaluator img/s':>15}")
    for threads in args.threads:
        for label, extra in (("default", {}), ("tuned", TUNED)):
            env = {k: v for k, v in os.environ.items() if k not in TUNED}
            env.update(extra)
            if threads > 1:
                env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as nas-train does
            p = subprocess.run([sys.executable, __file__, "--child", "--threads", str(threads), "--steps",
                                str(args.steps), "--resolution", str(args.resolution)], capture_output=True, text=True, env=env)
            if p.returncode:
                print(p.stderr, file=sys.stderr)
                return 1
            m = json.loads(p.stdout.strip().splitlines()[-1])
            print(f"{threads:>7} {label:<9} {m['matmul_gflops']:>11.1f} {m['loop_images_per_second']:>10.1f} "
                  f"{m['loop_gflops']:>9.2f} {100 * m['loop_gflops'] / m['matmul_gflops']:>5.1f}% "
                  f"{m['loop_channels_last_images_per_second']:>11.1f} ({m['loop_channels_last_images_per_second'] / m['loop_images_per_second']:.2f}x)"
                  f"{m['evaluator_images_per_second']:>15.1f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"FLOPs per image at {args.resolution} px (analytic, 1 multiply-add = 1 flop, 10 classes): {m['flops_per_image']:,}; "
          "training counts 3x (forward + backward)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
