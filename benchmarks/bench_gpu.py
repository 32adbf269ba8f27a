"""The GPU checks in one go: training throughput, the CUDA latency table and its validation,
the default search on the GPU, and the CUDA-only tests.

    python benchmarks/bench_gpu.py --output results/gpu        # on a machine with a CUDA device

Prints, and writes to ``OUTPUT/bench_gpu.json`` (with the exact commands it ran):

1. **Training throughput** of EfficientNet-B0 at 224 px, batch 256, 10 classes, on
   synthetic data already on the device (the bare step of :mod:`nas.train`: channels-last,
   label-smoothed cross-entropy, AdamW), in float32 and under bf16 autocast (what
   ``nas-train --device cuda`` uses): images/s after warm-up, timed with CUDA events over
   ``--steps`` steps, and peak GPU memory.  The ratio bf16 / float32 is the figure to read.
2. **Latency table and validation on CUDA**: ``nas-latency table --device cuda`` (batch 1,
   CUDA events, synchronised, warm-up) and ``nas-latency validate --n 100 --json``; the
   share within +-10 %, the RMSPE and the noise floor as the tool prints them, and the
   seconds the table took.
3. **The default search with** ``--device cuda``: ``nas-search --target-flops 400M
   --device cuda``; wall seconds, best FLOPs and reward (from ``summary.json``).
4. **The CUDA-only tests** (``pytest -k cuda``): where no GPU exists they are skipped,
   here they must pass (e.g. the same seed gives the same accuracy on CPU and CUDA up to
   bf16 rounding).

Without a CUDA device it prints one line and exits 1: nothing is measured on the CPU
here (``bench_train.py`` and ``nas-latency`` cover the CPU).  Figures, not assertions.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def throughput(steps: int, batch: int, resolution: int, bf16: bool) -> dict:
    import torch
    from torch import nn

    from nas.build import build_model
    from nas.presets import load_preset
    from nas.train import MEMORY_FORMAT

    dev = torch.device("cuda", 0)
    torch.manual_seed(0)
    spec = load_preset("efficientnet-b0").replace(num_classes=10, resolution=resolution)
    model = build_model(spec).to(device=dev, memory_format=MEMORY_FORMAT).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, resolution, resolution, device=dev).contiguous(memory_format=MEMORY_FORMAT)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):  # warm-up: cuDNN autotuning, allocator
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        step()
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3
    return {"dtype": "bf16 autocast" if bf16 else "float32", "steps": steps, "batch": batch,
            "resolution": resolution, "images_per_second": steps * batch / seconds,
            "seconds_per_step": seconds / steps, "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30}


def run(cmd: list[str], log) -> tuple[int, float, str]:
    line = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {line}", flush=True)
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    log.write(f"$ {line}\n# exit {p.returncode} after {seconds:.1f} s\n{p.stdout}{p.stderr}\n")
    log.flush()
    if p.returncode:
        print(f"  exit {p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}", flush=True)
    return p.returncode, seconds, p.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=ROOT / "results" / "gpu", help="folder for the outputs")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per dtype (default 30)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--n", type=int, default=100, help="members for the latency validation (default 100)")
    ap.add_argument("--skip", nargs="*", default=(), choices=("throughput", "latency", "search", "tests"))
    args = ap.parse_args(argv)

    import torch
    if not torch.cuda.is_available():
        print(f"bench_gpu: no CUDA device on this machine (torch {torch.__version__}); nothing measured",
              file=sys.stderr)
        return 1
    args.output.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    doc: dict = {"command": "python benchmarks/bench_gpu.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
                 "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda}
    print(f"{doc['device']}, torch {doc['torch']}, CUDA {doc['cuda']}", flush=True)
    with open(args.output / "bench_gpu.log", "w") as log:
        if "throughput" not in args.skip:
            rows = [throughput(args.steps, args.batch, args.resolution, bf16) for bf16 in (False, True)]
            for r in rows:
                print(f"B0 {r['resolution']} px, batch {r['batch']}, {r['dtype']}: {r['images_per_second']:.0f} "
                      f"images/s, {r['peak_memory_gib']:.1f} GiB peak", flush=True)
            doc["throughput"] = rows
            doc["bf16_speedup"] = rows[1]["images_per_second"] / rows[0]["images_per_second"]
            print(f"bf16 / float32: {doc['bf16_speedup']:.2f}x", flush=True)
        if "latency" not in args.skip:
            table = args.output / "lat-cuda.json"
            # --allow-load: the load average still holds this script's own throughput step (recorded either way)
            rc, sec, _ = run([str(bin_dir / "nas-latency"), "table", "--space", "mnasnet-b0", "--device", "cuda",
                              "--output", str(table), "--quiet", "--allow-load"], log)
            doc["latency_table"] = {"exit": rc, "seconds": sec, "path": str(table)}
            if rc == 0:
                rc, sec, out = run([str(bin_dir / "nas-latency"), "validate", "--table", str(table), "--n", str(args.n),
                                    "--json", "--quiet", "--allow-load", "--output-dir",
                                    str(args.output / "validate-cuda")], log)
                doc["latency_validation"] = {"exit": rc, "seconds": sec, **(json.loads(out) if rc == 0 else {})}
                if rc == 0:
                    v = doc["latency_validation"]
                    print(f"CUDA latency: {v['within_10pct']:.1%} within ±10 %, RMSPE {v['rmspe']:.1%} "
                          f"(noise floor {v['noise']['within_10pct']:.1%}); table {doc['latency_table']['seconds']:.0f} s",
                          flush=True)
        if "search" not in args.skip:
            out_dir = args.output / "search-400M-cuda"
            rc, sec, _ = run([str(bin_dir / "nas-search"), "--target-flops", "400M", "--device", "cuda",
                              "--output", str(out_dir), "--no-progress"], log)
            doc["search"] = {"exit": rc, "seconds": sec}
            summary = out_dir / "summary.json"
            if rc == 0 and summary.exists():
                s = json.loads(summary.read_text())
                doc["search"].update({k: s.get(k) for k in ("best", "n_trials", "references")})
                print(f"nas-search --target-flops 400M --device cuda: {sec:.0f} s", flush=True)
        if "tests" not in args.skip:
            rc, sec, out = run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
                                "tests"], log)
            doc["cuda_tests"] = {"exit": rc, "seconds": sec, "summary": out.strip().splitlines()[-1] if out else ""}
            print(f"CUDA tests: {doc['cuda_tests']['summary']}", flush=True)
    (args.output / "bench_gpu.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.output / 'bench_gpu.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
