"""FixRes on Fashion-MNIST: train at a lower resolution, test at 28 px with and without fine-tuning.

Two studies, both at the ground truth's budget (results/ground_truth/: the same 10k training
images for every seed, 3 epochs, batch 128, adamw at 0.012 per 256 images, no augmentation;
the whole 10k test split):

* ``resolution``: EfficientNet-B0 trained at 16, 20 and 24 px (3 seeds), evaluated at the training
  resolution, at 28 px as trained, and at 28 px after one epoch of FixRes fine-tuning
  (:mod:`nas.fixres`: the classifier and BatchNorm layers, training images at 28 px, no augmentation).
* ``family``: EfficientNet-B0..B3 (the presets), each at its resolution scaled to Fashion-MNIST
  (28 x r / 224: 28, 30, 32, 38 px), trained at 0.8x that and tested at full, with and without
  fine-tuning (2 seeds).
* ``resolution-all-layers``: the control for the first: the same trainings (seed 0), fine-tuned in every layer.

Every finished training is appended to ``rows.jsonl`` at once; a rerun skips what is done.
``report`` writes ``summary.json`` and ``README.md`` from the rows.

    python scripts/fixres_study.py run --workers 2 --output results/fixres
    python scripts/fixres_study.py report --output results/fixres
    python scripts/fixres_study.py lr-sweep          # the fine-tuning rate, on the embedded sample
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rows import config_key, read_rows, run_pool, t_interval90  # noqa: E402

SETTINGS = {"data": "fashion-mnist", "train_images": 10000, "data_seed": 0, "epochs": 3, "batch_size": 128,
            "recipe": "adamw", "lr": 0.012, "augment": False, "finetune_epochs": 1, "finetune_lr": 0.012,
            "threads": 1}
RESOLUTION_STUDY = {"spec": "efficientnet-b0", "train_resolutions": [16, 20, 24], "test_resolution": 28,
                    "seeds": [0, 1, 2]}
FAMILY_STUDY = {"specs": ["efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3"],
                "base_resolution": 28, "train_fraction": 0.8, "seeds": [0, 1]}


def family_resolutions(name: str) -> tuple[int, int]:
    """(train, test) px of a preset at Fashion-MNIST's scale: test = 28 x r / 224, train = 0.8 x test."""
    import nas

    test = round(FAMILY_STUDY["base_resolution"] * nas.load_spec(name).resolution / 224)
    return round(FAMILY_STUDY["train_fraction"] * test), test


def jobs() -> list[dict]:
    out = [{"study": study, "spec": RESOLUTION_STUDY["spec"], "train_resolution": r,
            "test_resolution": RESOLUTION_STUDY["test_resolution"], "seed": s}
           for study in ("resolution", "resolution-all-layers")
           for s in RESOLUTION_STUDY["seeds"][:None if study == "resolution" else 1]
           for r in RESOLUTION_STUDY["train_resolutions"]]
    for s in FAMILY_STUDY["seeds"]:
        for name in FAMILY_STUDY["specs"]:
            train, test = family_resolutions(name)
            out.append({"study": "family", "spec": name, "train_resolution": train, "test_resolution": test,
                        "seed": s})
    return out


def job_key(job: dict) -> str:
    return f"{job['study']}/{job['spec']}/{job['train_resolution']}->{job['test_resolution']}/seed{job['seed']}"


_DATA = None


def _init(settings: dict) -> None:
    global _DATA
    import torch

    from nas.data import load_dataset

    torch.set_num_threads(settings["threads"])
    _DATA = load_dataset(settings["data"]).subset(settings["train_images"], seed=settings["data_seed"])


def _work(job: dict) -> dict:
    import nas
    from nas.fixres import fixres_finetune
    from nas.train import train_and_evaluate

    s = SETTINGS
    spec = nas.load_spec(job["spec"])
    r = train_and_evaluate(spec, _DATA, epochs=s["epochs"], resolution=job["train_resolution"],
                           batch_size=s["batch_size"], recipe=s["recipe"], lr=s["lr"], seed=job["seed"],
                           augment=s["augment"], return_model=True)
    row = {**job, "key": job_key(job), "train_res_accuracy": r.accuracy, "train_seconds": r.seconds}
    if r.failed:
        return {**row, "failed": r.reason}
    # the control study retrains the same model (deterministic with its seed) and fine-tunes every layer
    layers = "all" if job["study"] == "resolution-all-layers" else "classifier+bn"
    fix = fixres_finetune(spec, r.model, _DATA, job["test_resolution"], epochs=s["finetune_epochs"],
                          batch_size=s["batch_size"], recipe=s["recipe"], lr=s["finetune_lr"], seed=job["seed"],
                          layers=layers)
    return {**row, "no_finetune": fix.no_finetune_accuracy, "finetune": fix.finetune_accuracy,
            "finetune_lr": fix.lr, "finetune_seconds": fix.seconds, "layers": fix.layers}


def run(args) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    key = config_key(SETTINGS)
    done = {row["key"] for row in read_rows(rows_path) if row.get("config") == key}
    todo = [j for j in jobs() if job_key(j) not in done]
    print(f"{len(todo)} of {len(jobs())} trainings to run ({len(done)} done) with {args.workers} worker(s)",
          file=sys.stderr)

    def on_row(job, row):
        with rows_path.open("a") as f:
            f.write(json.dumps({**row, "config": key}) + "\n")
        if "failed" in row:
            return f"{row['key']}: FAILED {row['failed']}"
        return (f"{row['key']}: {row['train_res_accuracy']:.4f} at train res, {row['no_finetune']:.4f} -> "
                f"{row['finetune']:.4f} at {job['test_resolution']} px")

    if todo:
        run_pool(todo, _work, workers=args.workers, initializer=_init, initargs=(SETTINGS,), on_row=on_row,
                 total=len(jobs()), already=len(done))
    return report(args)


def _group(rows, study):
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["study"] == study and "failed" not in row:
            groups.setdefault((row["spec"], row["train_resolution"], row["test_resolution"]), []).append(row)
    for g in groups.values():
        g.sort(key=lambda r: r["seed"])
    return groups


def _entry(spec, train, test, g) -> dict:
    gain = [r["finetune"] - r["no_finetune"] for r in g]
    vs_train = [r["finetune"] - r["train_res_accuracy"] for r in g]
    return {"spec": spec, "train_resolution": train, "test_resolution": test, "seeds": [r["seed"] for r in g],
            "train_res_accuracy": [r["train_res_accuracy"] for r in g], "no_finetune": [r["no_finetune"] for r in g],
            "finetune": [r["finetune"] for r in g],
            "finetune_gain": {"mean": float(np.mean(gain)), "interval90": t_interval90(gain)},
            "finetune_vs_train_res": {"mean": float(np.mean(vs_train)), "interval90": t_interval90(vs_train)}}


def report(args) -> int:
    out = Path(args.output)
    key = config_key(SETTINGS)
    rows = [r for r in read_rows(out / "rows.jsonl") if r.get("config") == key]
    expected = len(jobs())
    res = [_entry(*k, g) for k, g in sorted(_group(rows, "resolution").items(), key=lambda kv: kv[0][1])]
    order = {n: i for i, n in enumerate(FAMILY_STUDY["specs"])}
    fam = [_entry(*k, g) for k, g in sorted(_group(rows, "family").items(), key=lambda kv: order[kv[0][0]])]
    every = [_entry(*k, g) for k, g in sorted(_group(rows, "resolution-all-layers").items(), key=lambda kv: kv[0][1])]
    status = "complete" if len(rows) >= expected else f"in progress: {len(rows)} of {expected} trainings"
    doc = {"format": "nas-fixres-study", "version": 1, "status": status, "settings": SETTINGS,
           "command": "python scripts/fixres_study.py run --workers 2 --output results/fixres",
           "resolution": res, "family": fam, "resolution_all_layers": every}
    (out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")

    def fmt(v):
        return f"{np.mean(v):.3f} ({min(v):.3f}–{max(v):.3f})"

    def table(entries):
        lines = ["| spec | train px | test px | seeds | at train px | at test px, as trained | at test px, fine-tuned "
                 "| fine-tuning's gain (90 % CI) | fine-tuned − train px (90 % CI) |", "|---|---|---|---|---|---|---|---|---|"]
        for e in entries:
            g, d = e["finetune_gain"], e["finetune_vs_train_res"]
            lines.append(f"| {e['spec']} | {e['train_resolution']} | {e['test_resolution']} | {len(e['seeds'])} | "
                         f"{fmt(e['train_res_accuracy'])} | {fmt(e['no_finetune'])} | {fmt(e['finetune'])} | "
                         f"{g['mean']:+.3f} ({g['interval90'][0]:+.3f}…{g['interval90'][1]:+.3f}) | "
                         f"{d['mean']:+.3f} ({d['interval90'][0]:+.3f}…{d['interval90'][1]:+.3f}) |")
        return lines

    md = [f"# FixRes on Fashion-MNIST ({status})", "", "Made by", "", "```sh", doc["command"],
          "python scripts/fixres_study.py report --output results/fixres", "```", "",
          "Settings: " + ", ".join(f"{k} {v}" for k, v in SETTINGS.items()) + ". Fine-tuning: "
          "`nas.fixres` (classifier and BatchNorm layers, training images at the test resolution, no augmentation, "
          "the recipe's rate). Means with (min–max) over seeds; intervals are 90 % t-intervals over seeds "
          "(paired differences).", "", "## B0 at three training resolutions, tested at 28 px", ""]
    md += table(res) + ["", "## The family, trained at 0.8x its resolution and tested at full", ""] + table(fam)
    md += ["", "## Control: B0 as in the first table, fine-tuned in every layer (not FixRes's choice)", "",
           "The same trainings (deterministic with their seeds), then one epoch of fine-tuning at 28 px with every "
           "parameter learning: how much of the gap the frozen convolutions leave.", ""] + table(every)
    (out / "README.md").write_text("\n".join(md) + "\n" + _reading(out))
    print("\n".join(md))
    return 0


def _reading(out: Path) -> str:
    """The hand-written reading, kept in reading.md beside the generated tables."""
    path = out / "reading.md"
    return "\n" + path.read_text() if path.exists() else ""


def lr_sweep(args) -> int:
    """Fine-tuning rate x epochs for B0 trained 3 epochs at 20 px on the embedded sample, tested at 28 px."""
    import torch

    import nas
    from nas.data import load_dataset
    from nas.fixres import fixres_finetune
    from nas.train import train_and_evaluate

    torch.set_num_threads(args.threads)
    data = load_dataset("sample")
    spec = nas.load_spec("efficientnet-b0")
    r = train_and_evaluate(spec, data, epochs=3, resolution=20, recipe="adamw", batch_size=128, return_model=True)
    print(f"trained at 20 px: {r.accuracy:.3f}")
    for lr in (0.0012, 0.006, 0.012, 0.03):
        for epochs in (1, 3):
            f = fixres_finetune(spec, r.model, data, 28, epochs=epochs, batch_size=128, lr=lr)
            print(f"lr {lr:<7g} epochs {epochs}: {f.no_finetune_accuracy:.3f} -> {f.finetune_accuracy:.3f}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--output", default="results/fixres")
    p = sub.add_parser("report")
    p.add_argument("--output", default="results/fixres")
    s = sub.add_parser("lr-sweep")
    s.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    return {"run": run, "report": report, "lr-sweep": lr_sweep}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
