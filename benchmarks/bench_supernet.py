"""Supernet training throughput against stand-alone EfficientNet-B0 training, in the same process.

    python benchmarks/bench_supernet.py [--steps 6] [--resolution 32] [--batch-size 64] [--threads 1]
                                        [--score-members 4] [--calibration-images 2000]

Prints, on ``--threads`` torch threads with the tuned allocator (``nas.allocator.tune_allocator``,
the in-process form of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``):

* stand-alone B0: training images/s that :func:`nas.train.train_and_evaluate` reports
  (adamw recipe, ``--steps`` steps on the embedded sample);
* the supernet: training images/s of :func:`nas.supernet.train_supernet` (sandwich
  rule: largest + smallest + 2 random members per image, channels-last), its steps/s,
  the time per step of each sandwich member type measured on its own, and the
  largest's in channels-last against contiguous format;
* scoring: seconds per member (BN recalibration on ``--calibration-images`` images,
  then the held-out split), for ``--score-members`` random members;
* peak RSS of the process;
* the time the full run ``nas-supernet train --data fashion-mnist --epochs 8`` needs at
  the measured steps/s.

Other jobs on a shared machine change every figure: the load average is printed
before and after.  Figures, not assertions.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FASHION_TRAIN = 60000  # Fashion-MNIST's train split


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--score-members", type=int, default=4)
    ap.add_argument("--calibration-images", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=8, help="of the full run the estimate is for")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from nas.allocator import tune_allocator
    from nas.data import load_dataset
    from nas.presets import load_preset
    from nas.supernet import Supernet, SupernetEstimator, TrainConfig, peak_rss_mb, train_supernet
    from nas.train import train_and_evaluate
    from search_spaces import get_space

    tune_allocator()
    torch.set_num_threads(args.threads)
    res, bs = args.resolution, args.batch_size
    print(f"{args.threads} thread(s), {res} px, batch {bs}, {os.cpu_count()} CPUs visible, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    data = load_dataset("sample")

    r = train_and_evaluate(load_preset("efficientnet-b0"), data, steps=args.steps, resolution=res, batch_size=bs,
                           recipe="adamw", limit_val=256)
    b0_ips = r.images_per_second
    print(f"stand-alone B0 (nas.train, adamw): {b0_ips:.1f} training images/s "
          f"({b0_ips / bs:.3f} steps/s)")
    b0_cpu = _b0_images_per_cpu_second(args.steps, res, bs)
    print(f"  bare B0 step (channels-last, AdamW): {b0_cpu:.1f} images per CPU-second")

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(data="sample", epochs=1, resolution=res, batch_size=bs, limit_train=bs * args.steps,
                          eval_images=0)
        s = train_supernet(cfg, data, d, progress=False)
        sn_ips = s["images_per_second"]
        steps_per_s = sn_ips / bs
        print(f"supernet (sandwich, 4 members per image): {sn_ips:.1f} training images/s ({steps_per_s:.3f} steps/s, "
              f"{b0_ips / sn_ips:.1f}x slower per image than B0 alone)")
        sn_cpu = s["step"] * bs / s["train_cpu_seconds"]
        cpu_steps_per_s = sn_cpu / bs
        print(f"  {sn_cpu:.1f} images per CPU-second ({cpu_steps_per_s:.3f} steps per CPU-second, "
              f"{b0_cpu / sn_cpu:.1f}x the bare B0 step's CPU time per image)")

        # each member type's forward + backward on its own, in the layout training uses (channels-last)
        net = Supernet(get_space("mnasnet-b0"), num_classes=10).train()
        x, y = torch.randn(bs, 3, res, res), torch.randint(0, 10, (bs,))
        rng = random.Random(0)
        randoms = [net.sample(rng) for _ in range(4)]

        def timed(members, fmt) -> float:
            net.to(memory_format=fmt)
            xf = x.contiguous(memory_format=fmt)
            F.cross_entropy(net(xf, members[0]), y).backward()  # warm-up
            t = time.perf_counter()
            for m in members:
                F.cross_entropy(net(xf, m), y).backward()
            return (time.perf_counter() - t) / len(members)

        for label, members in (("largest", [net.largest]), ("smallest", [net.smallest]),
                               ("random (mean of 4)", randoms)):
            print(f"  {label}: {timed(members, torch.channels_last):.2f} s forward + backward")
        cl, contiguous = timed([net.largest], torch.channels_last), timed([net.largest], torch.contiguous_format)
        print(f"  largest again, channels-last {cl:.2f} s vs contiguous {contiguous:.2f} s ({contiguous / cl:.2f}x)")
        params = sum(p.numel() for p in net.parameters())
        opt = torch.optim.AdamW(net.parameters())
        opt.step()
        t = time.perf_counter()
        opt.step()
        print(f"  AdamW step over all {params / 1e6:.1f}M supernet parameters: {time.perf_counter() - t:.2f} s")
        del net, opt

        est = SupernetEstimator(d, data, calibration_images=args.calibration_images)
        space = get_space("mnasnet-b0")
        rng = random.Random(1)
        times = []
        for _ in range(args.score_members):
            e = est(space.decode(space.sample(rng)))
            times.append(e.seconds)
        print(f"scoring: {sum(times) / len(times):.2f} s per member (min {min(times):.2f}, max {max(times):.2f}; "
              f"BN on {args.calibration_images} images, {data.num_val} held-out images, {res} px)")

    print(f"peak RSS {peak_rss_mb():.0f} MiB")
    steps = args.epochs * (FASHION_TRAIN // bs)
    print(f"full run: nas-supernet train --space mnasnet-b0 --data fashion-mnist --epochs {args.epochs} "
          f"--resolution {res} --batch-size {bs} --output runs/sn = {steps} steps: ~{steps / steps_per_s / 3600:.1f} h "
          f"at this run's wall-clock rate, ~{steps / cpu_steps_per_s / 3600:.1f} h on an idle core (CPU-time rate)")
    for limit in (10000, 20000):
        st = args.epochs * (limit // bs)
        print(f"  with --limit-train {limit}: {st} steps, ~{st / steps_per_s / 3600:.1f} h wall-clock rate, "
              f"~{st / cpu_steps_per_s / 3600:.1f} h CPU-time rate")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


def _b0_images_per_cpu_second(steps: int, res: int, bs: int) -> float:
    """The bare training step of B0 (what nas.train runs, without its evaluation), timed in CPU seconds."""
    import torch
    import torch.nn.functional as F

    from nas.build import build_model
    from nas.presets import load_preset

    torch.manual_seed(0)
    model = build_model(load_preset("efficientnet-b0").replace(num_classes=10)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters())
    x = torch.randn(bs, 3, res, res).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))
    model.train()

    def step():
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    c = time.process_time()
    for _ in range(steps):
        step()
    return steps * bs / (time.process_time() - c)


if __name__ == "__main__":
    sys.exit(main())
