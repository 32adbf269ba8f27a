"""Noisy Student on Fashion-MNIST with 1,000 and 5,000 labels, 3 seeds, and the paper's controls.

Per (labels, seed), one chain of ``nas-student`` runs, each resumable on its own:

* ``noisy-soft``: EfficientNet-B0 teacher, 3 rounds of same-size noised students, soft labels (the default);
* ``no-noise``: 1 round from the same teacher with every noise off (``--no-noise``): the control for noise,
  compared with the noised round-1 student (the same teacher, data and budget; 3 rounds did not fit the
  session's compute: each round costs about twice a teacher);
* ``hard``: 1 round from the same teacher with hard labels (``--pseudo hard``);
* ``larger``: 1 round from the same teacher with a larger student (``--student-scale 1``: B1-like depth and width).

Every model gets the same budget (``BUDGET``: optimizer steps, batch, resolution, recipe), so a teacher
and its students differ only in data, targets and noise.  Unlabeled: the rest of the train split.
Held-out: the official 10k test split.  Chains run on ``--workers`` processes (one thread each);
``report`` writes ``summary.json`` and ``README.md`` from the runs' own summaries.

    python scripts/noisy_student_study.py run --workers 2 --output results/noisy_student
    python scripts/noisy_student_study.py report --output results/noisy_student
    python scripts/noisy_student_study.py probe --output results/noisy_student   # 3x the student's steps
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rows import t_interval90  # noqa: E402

LABELS = (1000, 5000)
SEEDS = (0, 1, 2)
BUDGET = ["--steps", "500", "--batch-size", "128", "--resolution", "16", "--recipe", "adamw", "--threads", "1"]
TEACHER = "efficientnet-b0"
DATA = "fashion-mnist"
VARIANTS = {  # name -> (extra flags, uses the noisy-soft run's teacher)
    "noisy-soft": (["--rounds", "3"], False),
    "no-noise": (["--rounds", "1", "--no-noise"], True),
    "hard": (["--rounds", "1", "--pseudo", "hard"], True),
    "larger": (["--rounds", "1", "--student-scale", "1"], True),
}


def command(out: Path, labels: int, seed: int, variant: str) -> list[str]:
    flags, shared_teacher = VARIANTS[variant]
    run_dir = out / "runs" / f"labels{labels}-seed{seed}"
    cmd = ["nas-student", TEACHER, "--data", DATA, "--labeled", str(labels), "--seed", str(seed), *BUDGET, *flags]
    if shared_teacher:
        cmd += ["--teacher-weights", str(run_dir / "noisy-soft" / "round-0" / "weights.pt")]
    return cmd + ["--output", str(run_dir / variant), "--quiet", "--json"]


def _chain(out: Path, labels: int, seed: int, log) -> None:
    for variant in VARIANTS:
        cmd = command(out, labels, seed, variant)
        summary = out / "runs" / f"labels{labels}-seed{seed}" / variant / "summary.json"
        rounds = int(VARIANTS[variant][0][1])
        if summary.exists() and len(json.loads(summary.read_text())["rounds"]) == rounds:
            continue
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            log(f"labels {labels} seed {seed} {variant}: FAILED ({p.returncode}): {p.stderr.strip()[-300:]}")
            return
        s = json.loads(p.stdout)
        accs = " ".join(f"{r['student_accuracy']:.4f}" for r in s["rounds"])
        log(f"labels {labels} seed {seed} {variant}: teacher {s['teacher']['accuracy']:.4f}, students {accs} "
            f"({time.perf_counter() - t0:.0f} s)")


def run(args) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "commands.txt").write_text("\n".join(shlex.join(command(out, n, s, v)) for n in LABELS for s in SEEDS
                                                for v in VARIANTS) + "\n")
    t0 = time.perf_counter()
    chains = [(n, s) for n in LABELS for s in SEEDS]
    done = []

    def log(text):
        done.append(text)
        print(f"[{time.perf_counter() - t0:6.0f} s] {text}", file=sys.stderr, flush=True)

    with ThreadPoolExecutor(args.workers) as pool:  # each chain is a sequence of subprocesses
        list(pool.map(lambda c: _chain(out, *c, log), chains))
    return report(args)


def _read(out: Path, labels: int, seed: int, variant: str) -> dict | None:
    path = out / "runs" / f"labels{labels}-seed{seed}" / variant / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _probe(out: Path) -> dict | None:
    rows = []
    for seed in PROBE_SEEDS:
        where = out / "probe-budget" / (f"seed{seed}" if seed else "")
        paths = {name: where / name / "summary.json" for name in ("noisy", "no-noise")}
        if not all(p.exists() for p in paths.values()):
            continue
        docs = {name: json.loads(p.read_text()) for name, p in paths.items()}
        if all(d["rounds"] for d in docs.values()):
            rows.append({"seed": seed, "teacher": docs["noisy"]["teacher"]["accuracy"],
                         **{name: d["rounds"][0]["student_accuracy"] for name, d in docs.items()}})
    if not rows:
        return None
    diff = [r["noisy"] - r["no-noise"] for r in rows]
    return {"steps": int(PROBE_STEPS), "labels": 1000, "rows": rows,
            "noisy - no-noise": {"mean": float(np.mean(diff)), "interval90": t_interval90(diff)},
            "commands": [shlex.join(c) for r in rows for c in probe_commands(out, r["seed"])]}


def report(args) -> int:
    out = Path(args.output)
    settings, complete = [], True
    for n in LABELS:
        row = {"labels": n, "seeds": [], "teacher": [], "student": [], "student_rounds": [], "student_no_noise": [],
               "student_no_noise_rounds": [], "student_hard": [], "student_larger": [], "student_round1": []}
        for s in SEEDS:
            runs = {v: _read(out, n, s, v) for v in VARIANTS}
            want = {v: int(VARIANTS[v][0][1]) for v in VARIANTS}
            if any(r is None or len(r["rounds"]) < want[v] for v, r in runs.items()):
                complete = False
                continue
            row["seeds"].append(s)
            row["teacher"].append(runs["noisy-soft"]["teacher"]["accuracy"])
            rounds = [r["student_accuracy"] for r in runs["noisy-soft"]["rounds"]]
            row["student"].append(rounds[-1])
            row["student_round1"].append(rounds[0])
            row["student_rounds"].append(rounds)
            nn_rounds = [r["student_accuracy"] for r in runs["no-noise"]["rounds"]]
            row["student_no_noise"].append(nn_rounds[-1])
            row["student_no_noise_rounds"].append(nn_rounds)
            row["student_hard"].append(runs["hard"]["rounds"][0]["student_accuracy"])
            row["student_larger"].append(runs["larger"]["rounds"][0]["student_accuracy"])
        if row["seeds"]:
            t = np.array(row["teacher"])
            row["gains"] = {name: {"mean": float(np.mean(np.array(row[key]) - base)),
                                   "interval90": t_interval90(np.array(row[key]) - base)}
                            for name, key, base in (
                                ("student - teacher", "student", t),
                                ("round-1 student - teacher", "student_round1", t),
                                ("round-1 noised - round-1 without noise (the noise control)", "student_round1",
                                 np.array(row["student_no_noise"])),
                                ("no-noise student - teacher", "student_no_noise", t),
                                ("round-1 soft - round-1 hard", "student_round1", np.array(row["student_hard"])),
                                ("larger round-1 - same-size round-1", "student_larger",
                                 np.array(row["student_round1"])))}
        settings.append(row)
    doc = {"format": "nas-noisy-student-study", "version": 1,
           "status": "complete" if complete else "in progress",
           "teacher": TEACHER, "data": DATA, "budget": " ".join(BUDGET), "variants": {k: " ".join(v[0]) for k, v in VARIANTS.items()},
           "command": "python scripts/noisy_student_study.py run --workers 2 --output results/noisy_student",
           "student_no_noise_round": 1, "settings": settings, "probe": _probe(out)}
    (out / "summary.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = [f"# Noisy Student on Fashion-MNIST ({doc['status']})", "", "Made by", "", "```sh", doc["command"],
          "python scripts/noisy_student_study.py report --output results/noisy_student", "```", "",
          f"Every run's exact `nas-student` command is in `commands.txt`; each run's files are under `runs/`. "
          f"Teacher {TEACHER}; every model `{' '.join(BUDGET)}`; unlabeled: the rest of the 60k train split; "
          "held-out: the 10k test split. Means over seeds, (min–max); gains are paired by seed with 90 % "
          "t-intervals.", ""]
    for row in settings:
        if not row["seeds"]:
            continue

        def f(key):
            v = row[key]
            return f"{np.mean(v):.4f} ({min(v):.4f}–{max(v):.4f})"
        md += [f"## {row['labels']:,} labels, seeds {row['seeds']}", "", "| model | held-out accuracy |", "|---|---|",
               f"| teacher (labeled only) | {f('teacher')} |"]
        for k in range(len(row["student_rounds"][0])):
            md.append(f"| round-{k + 1} student, noised, soft labels | "
                      f"{np.mean([r[k] for r in row['student_rounds']]):.4f} |")
        for k in range(len(row["student_no_noise_rounds"][0])):
            md.append(f"| round-{k + 1} student without noise | "
                      f"{np.mean([r[k] for r in row['student_no_noise_rounds']]):.4f} |")
        md += [f"| round-1 student, hard labels | {f('student_hard')} |",
               f"| round-1 larger student (phi 1) | {f('student_larger')} |", "", "| difference | mean | 90 % CI |",
               "|---|---|---|"]
        for name, g in row["gains"].items():
            md.append(f"| {name} | {g['mean']:+.4f} | {g['interval90'][0]:+.4f} … {g['interval90'][1]:+.4f} |")
        md.append("")
    if doc["probe"]:
        pr = doc["probe"]
        d = pr["noisy - no-noise"]
        md += [f"## Probe: the students' budget tripled (labels 1,000, seeds {[r['seed'] for r in pr['rows']]})", "",
               "`python scripts/noisy_student_study.py probe --output results/noisy_student`: each seed's teacher "
               f"(500 steps); one student round with {PROBE_STEPS} steps, with and without noise.", "",
               "| seed | teacher | noised student | student without noise |", "|---|---|---|---|"]
        md += [f"| {r['seed']} | {r['teacher']:.4f} | {r['noisy']:.4f} | {r['no-noise']:.4f} |" for r in pr["rows"]]
        md += ["", f"Noised − without noise: {d['mean']:+.4f} (90 % CI {d['interval90'][0]:+.4f} … "
                   f"{d['interval90'][1]:+.4f}).", ""]
    reading = out / "reading.md"
    (out / "README.md").write_text("\n".join(md) + ("\n" + reading.read_text() if reading.exists() else ""))
    print("\n".join(md))
    return 0


PROBE_STEPS = "1500"


PROBE_SEEDS = (0, 1, 2)


def probe_commands(out: Path, seed: int) -> list[list[str]]:
    """What would change the conclusion: the students of labels 1000 / ``seed`` given 3x the budget, with and
    without noise, from the same teacher (trained with 500 steps)."""
    teacher = out / "runs" / f"labels1000-seed{seed}" / "noisy-soft" / "round-0" / "weights.pt"
    budget = [PROBE_STEPS if b == "500" else b for b in BUDGET]
    base = ["nas-student", TEACHER, "--data", DATA, "--labeled", "1000", "--seed", str(seed), *budget, "--rounds", "1",
            "--teacher-weights", str(teacher)]
    where = out / "probe-budget" / (f"seed{seed}" if seed else "")  # seed 0's runs came first, at the top
    return [base + extra + ["--output", str(where / name), "--quiet", "--json"]
            for name, extra in (("noisy", []), ("no-noise", ["--no-noise"]))]


def _probe_seed(out: Path, seed: int) -> None:
    for cmd in probe_commands(out, seed):
        summary = Path(cmd[cmd.index("--output") + 1]) / "summary.json"
        if summary.exists() and json.loads(summary.read_text())["rounds"]:
            continue
        print(shlex.join(cmd), file=sys.stderr, flush=True)
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stderr.strip()[-300:], file=sys.stderr)
            return
        s = json.loads(p.stdout)
        print(f"seed {seed}: teacher {s['teacher']['accuracy']:.4f}, student {s['rounds'][0]['student_accuracy']:.4f}",
              file=sys.stderr, flush=True)


def probe(args) -> int:
    out = Path(args.output)
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda s: _probe_seed(out, s), PROBE_SEEDS))
    return report(args)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--output", default="results/noisy_student")
    p = sub.add_parser("report")
    p.add_argument("--output", default="results/noisy_student")
    b = sub.add_parser("probe", help="labels 1000: students with 3x the steps, with and without noise")
    b.add_argument("--output", default="results/noisy_student")
    b.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    return {"run": run, "report": report, "probe": probe}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
