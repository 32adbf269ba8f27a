"""Rule the common one-shot failure modes in or out, each with a number, on trained supernets.

    python scripts/supernet_diagnosis.py runs/supernet-ablation/today [more dirs ...]

For each supernet folder (``nas-supernet train`` output), writes one entry of
``results/supernet/diagnosis.json``:

* **BN statistics**: inherited accuracy of the largest, the smallest and the first 10 ground-truth
  architectures with the supernet's running statistics against statistics recalibrated on 1,000
  fixed training images (what scoring and the handed-over weights use).
* **Channel slicing**: per stage, the share of the stored output channels' L1 norm (last conv of
  the MBConv branch, layer 1) held by the first x0.75 and x1.0 channels, beside their share of
  the count: a narrower member keeps the first channels, so shares above the count mean the
  first channels carry more than their number (what Once-for-All's importance sorting enforces).
* **Kernel sharing**: the share of each stored 5x5 depthwise kernel's L1 norm in its centre 3x3,
  beside 9/25.
* **Feature alignment between op branches**: the largest member's input to a stage, run through
  each op branch of that stage's first layer (same width, kernel, SE, skip): Pearson correlation
  of their outputs, channel by channel (a successor stage trained on one branch's features reads
  the other's as it reads these).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.atomic import atomic_write_text  # noqa: E402
from nas.spec import Spec  # noqa: E402

OUT = ROOT / "results" / "supernet" / "diagnosis.json"
GT = ROOT / "results" / "ground_truth" / "table.json"


def _accuracy(model, val) -> float:
    from nas.train import evaluate
    return evaluate(model, iter(val))[0]


def diagnose(directory: Path) -> dict:
    from nas.data import load_dataset
    from nas.supernet import calibration_batches, inherit, load_supernet

    torch.manual_seed(0)
    net, meta = load_supernet(directory)
    data = load_dataset("fashion-mnist", seed=0).subset(10000, 2000, seed=0)
    res = meta["config"]["resolution"]
    calib = calibration_batches(data, resolution=res, channels=3, images=1000)
    val = list(data.loader("val", batch_size=256, resolution=res, channels=3, shuffle=False, seed=0))
    gt = json.loads(GT.read_text())["rows"][:10]
    members = {"largest": net.largest, "smallest": net.smallest}
    members.update({r["label"] if r.get("label") else f"gt{r['index']}": net.member(Spec.from_dict(r["spec"]))
                    for r in gt})
    bn = {}
    for name, m in members.items():
        bn[name] = {"running": _accuracy(inherit(net, m, None), val),
                    "recalibrated": _accuracy(inherit(net, m, calib), val)}

    slicing, kernels, alignment = {}, {}, {}
    space = net.space
    base = space.base
    x = torch.cat([b[0] for b in calib[:4]])
    feats = []
    with torch.no_grad():
        net.eval()
        net(x, net.largest, features=feats)
    inputs = [None] + feats[:-1]  # the input of stage i is stage i-1's output (stage 0: the stem's)
    with torch.no_grad():
        stem = net.act(net.stem(x, net.largest.spec.stem.out_channels, stride=net.largest.spec.stem.stride))
    inputs[0] = stem
    for i, layers in enumerate(net.stages):
        w = layers[0].ops["mbconv"].project[0].weight.detach()  # (max_out, mid, 1, 1)
        norms = w.abs().sum((1, 2, 3))
        n = len(norms)
        out = {}
        for mult in (0.75, 1.0):
            from nas.spec import round_filters
            c = round_filters(base.stages[i].out_channels, mult)
            out[f"x{mult}"] = {"channels": c, "of": n, "count_share": c / n,
                               "norm_share": float(norms[:c].sum() / norms.sum())}
        slicing[f"stage{i + 1}"] = out
        k = layers[0].ops["mbconv"].depthwise[0].weight.detach().abs()  # (mid, 1, 5, 5)
        kernels[f"stage{i + 1}"] = float(k[:, :, 1:4, 1:4].sum() / k.sum())
        # alignment: the largest's first layer of stage i with each op branch on the same input
        plan = next(p for p in net.largest.plans if p.stage_index == i and p.layer_index == 0)
        outs = {}
        with torch.no_grad():
            for op, expand in (("mbconv", 6), ("dwconv", 1), ("conv", 1)):
                st = dataclasses.replace(plan.stage, op=op, expand_ratio=expand, skip="none")  # the branch alone
                p = plan._replace(stage=st)
                outs[op] = layers[0](inputs[i], p)
        corr = {}
        for a, b in (("mbconv", "dwconv"), ("mbconv", "conv"), ("dwconv", "conv")):
            fa = outs[a].transpose(0, 1).reshape(outs[a].shape[1], -1)
            fb = outs[b].transpose(0, 1).reshape(outs[b].shape[1], -1)
            fa = fa - fa.mean(1, keepdim=True)
            fb = fb - fb.mean(1, keepdim=True)
            r = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
            corr[f"{a}~{b}"] = float(r.mean())
        alignment[f"stage{i + 1}"] = corr
    return {"directory": str(directory), "config": meta["config"], "step": meta["step"], "bn": bn,
            "channel_slicing": slicing, "kernel_centre_share": kernels, "kernel_centre_count_share": 9 / 25,
            "branch_feature_correlation": alignment}


def main(argv=None) -> int:
    dirs = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    torch.set_num_threads(1)
    result = json.loads(OUT.read_text()) if OUT.exists() else {"format": "nas-supernet-diagnosis", "version": 1,
                                                               "command": "python scripts/supernet_diagnosis.py DIR",
                                                               "supernets": {}}
    for d in dirs:
        r = diagnose(d)
        result["supernets"][d.name] = r
        atomic_write_text(OUT, json.dumps(result, indent=1) + "\n")
        bn = r["bn"]
        print(f"{d.name}: BN running -> recalibrated: " + ", ".join(
            f"{k} {v['running']:.3f}->{v['recalibrated']:.3f}" for k, v in list(bn.items())[:4]))
        print("  channel norm share of x1.0:", {k: round(v["x1.0"]["norm_share"], 3) for k, v in
                                                  r["channel_slicing"].items()}, "count share ~0.8")
        print("  kernel centre share:", {k: round(v, 3) for k, v in r["kernel_centre_share"].items()}, "count 0.36")
        print("  branch correlation:", {k: {a: round(b, 2) for a, b in v.items()} for k, v in
                                        r["branch_feature_correlation"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
