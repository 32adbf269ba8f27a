"""The latency study of issue 26, in one resumable command: run it alone on an idle machine.

For each backend (onnxruntime, then torch): build the per-layer table with the protocol
(``nas-latency table``), fit the correction on 30 measured random members (``nas-latency refit``),
validate on 50 held-out random members, each measured twice (``nas-latency validate``: the floor
beside the predictor, Spearman and FLOPs' Spearman, predicting against measuring speed).  Then end
to end on onnxruntime: ``nas-search --target-latency {5,10,20}ms --latency-table T`` (a proxy
estimator, a small trial budget), the best measured with the protocol afterwards (the search does it:
``best_latency_measured``), within ±10 % of the target or not.  Writes, under ``--output``
(default ``results/latency/protocol/``): the tables, one folder per validation, one per search,
``steps.jsonl`` (one line per finished step: its command, exit code, time, the load before and after)
and ``README.md`` (filled in from them: commands, machine, load, seeds, figures, targets)::

    python scripts/latency_study.py                        # the study (~20 min on an idle 2-core VM)
    python scripts/latency_study.py --quick --allow-load   # ~1-2 min smoke into /tmp: its figures are not results
    python scripts/latency_study.py --dry-run              # the commands and the estimated time only

**Resumable**: every finished step is appended to ``steps.jsonl`` at once and skipped on rerun; an
interrupted step resumes inside (the table is flushed as it is measured, refit saves the table after
every chunk of members, validate checkpoints every chunk, the search resumes from its journal).
**Alone**: before every step the load is checked (the 1-minute load average less this script's own
share); with other work running the script stops with one line (exit 1) unless ``--allow-load``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas.atomic import atomic_write_text  # noqa: E402
from nas.latency import DEFAULT_MAX_LOAD, BusyMachine, check_load, load_record, machine  # noqa: E402

SPACE = "mnasnet-b0"
FIT_SEED, REFIT_SEED, VALIDATE_SEED = 0, 2, 1  # the overhead's networks, the correction's members, the held-out ones

# seconds per step on an idle 2-core EPYC VM (estimated from the old protocol's measured costs: 2,086
# pieces; ~43 passes per piece and per network now): printed before anything runs
ESTIMATE = {"table": {"torch": 150, "onnxruntime": 200}, "refit": {"torch": 60, "onnxruntime": 110},
            "validate": {"torch": 200, "onnxruntime": 320}, "search": 40}
QUICK_ESTIMATE = {"table": 45, "refit": 8, "validate": 10, "search": 25}


def tool(name: str) -> list[str]:
    """The console script (``nas-latency``, ``nas-search``) next to this Python, else its module."""
    exe = Path(sys.executable).parent / name
    if exe.exists():
        return [str(exe)]
    module = {"nas-latency": "nas.cli.latency", "nas-search": "nas.cli.search"}[name]
    return [sys.executable, "-c", f"from {module} import entry; entry()"]


def _rel(p: Path) -> Path:
    try:
        return p.resolve().relative_to(ROOT)
    except ValueError:
        return p


def plan(args) -> list[dict]:
    """Every step: name, the command (as typed in the repository's root: ``nas-latency ...``), its files."""
    out = _rel(args.output)
    steps = []
    q = args.quick
    for b in args.backends:
        table = out / f"lat-{b}.json"
        cmd = ["nas-latency", "table", "--space", SPACE, "--backend", b, "--threads", "1", "--seed", str(FIT_SEED),
               "--output", str(table), "--quiet"]
        if args.duet:
            cmd.append("--duet")
        if q:
            cmd += ["--warmup", "1", "--runs", "3", "--fit-networks", "2"]
        steps.append({"name": f"table-{b}", "backend": b, "kind": "table", "command": cmd, "table": str(table)})
        steps.append({"name": f"refit-{b}", "backend": b, "kind": "refit", "table": str(table),
                      "command": ["nas-latency", "refit", str(table), "--members", str(args.refit_members),
                                  "--seed", str(REFIT_SEED), "--quiet"]})
        vdir = out / f"validate-{b}"
        cmd = ["nas-latency", "validate", "--table", str(table), "--n", str(args.validate_members), "--seed",
               str(VALIDATE_SEED), "--json", "--quiet", "--output-dir", str(vdir)]
        steps.append({"name": f"validate-{b}", "backend": b, "kind": "validate", "table": str(table),
                      "command": cmd, "dir": str(vdir)})
    e2e = args.e2e_backend
    if e2e in args.backends:
        for t in args.targets:
            sdir = out / f"search-{e2e}-{t:g}ms"
            cmd = ["nas-search", "--target-latency", f"{t:g}ms", "--latency-table", str(out / f"lat-{e2e}.json"),
                   "--estimator", "proxy", "--budget", str(args.search_budget), "--workers", "1", "--seed", "0",
                   "--output", str(sdir), "--no-progress"]
            steps.append({"name": f"search-{e2e}-{t:g}ms", "backend": e2e, "kind": "search", "target_ms": t,
                          "command": cmd, "dir": str(sdir)})
    return steps


def estimate(steps, quick: bool) -> float:
    total = 0.0
    for s in steps:
        if quick:
            total += QUICK_ESTIMATE[s["kind"]]
        elif s["kind"] == "search":
            total += ESTIMATE["search"]
        else:
            total += ESTIMATE[s["kind"]][s["backend"]]
    return total


def read_steps(path: Path) -> dict:
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line: that step runs again
            if row.get("rc") == 0:
                done[row["name"]] = row
    return done


def result_of(step: dict, stdout: str) -> dict:
    """What a finished step found (read from its files)."""
    if step["kind"] == "validate":
        rep = json.loads((ROOT / step["dir"] / "validate.json").read_text())
        keys = ("n", "within_10pct", "rmspe", "worst_error", "spearman", "flops_spearman", "floor",
                "predictor_over_floor", "seconds_per_prediction", "seconds_per_measurement", "speed_ratio")
        return {**{k: rep.get(k) for k in keys}, "noise_rmspe": rep["noise"]["rmspe"],
                "alternatives": rep.get("alternatives"), "protocol": rep.get("protocol"),
                "predictor_vs_first": rep.get("predictor_vs_first")}
    if step["kind"] in ("table", "refit"):
        t = json.loads((ROOT / step["table"]).read_text())
        c = t.get("correction") or {}
        return {"entries": len(t["entries"]), "overhead": t.get("overhead"), "protocol": t.get("protocol"),
                "correction": {k: c.get(k) for k in ("features", "coef", "seed", "fit")} if c else None,
                "reference": t.get("reference"), "stdout": stdout.strip()[-400:]}
    if step["kind"] == "search":
        summ = json.loads((ROOT / step["dir"] / "summary.json").read_text())
        best = summ.get("best") or {}
        predicted = (best.get("cost") or {}).get("latency", best.get("latency"))
        measured = summ.get("best_latency_measured")
        target = step["target_ms"] / 1e3
        return {"target": target, "predicted": predicted, "measured": measured,
                "error": (measured / target - 1) if measured else None,
                "within_10pct": (abs(measured / target - 1) <= 0.10) if measured else None,
                "seconds": summ.get("seconds")}
    return {}


def run_step(step: dict, args, log: Path) -> dict:
    try:
        before = check_load(args.max_load, allow=args.allow_load,
                            warn=lambda m: print(f"latency_study: WARNING: {m}", file=sys.stderr))
    except BusyMachine as e:
        print(f"latency_study: {e}; rerun later (finished steps are kept)", file=sys.stderr)
        raise SystemExit(1)
    cmd = list(step["command"])
    argv = tool(cmd[0]) + cmd[1:]
    if cmd[0] == "nas-latency" and cmd[1] in ("table", "refit", "validate"):
        # this script has checked the load; the child sees this script's own recent work as load: allow for it
        argv += ["--max-load", f"{args.max_load + before['own']:.2f}"] + (["--allow-load"] if args.allow_load else [])
    print(f"latency_study: {step['name']}: {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    sys.stdout.write(r.stdout)
    seconds = time.perf_counter() - t0
    row = {"name": step["name"], "command": " ".join(shlex.quote(c) for c in cmd), "rc": r.returncode,
           "seconds": round(seconds, 1), "load_before": before, "load_after": load_record()}
    if r.returncode == 0:
        row["result"] = result_of(step, r.stdout)
    elif step["kind"] == "search" and r.returncode == 2:
        row["result"] = {"target": step["target_ms"] / 1e3, "refused": True}  # e.g. below the fastest member
        row["rc"] = 0
        row["note"] = "nas-search refused the target (see its message on stderr)"
    with log.open("a") as f:  # at once: a rerun skips it
        f.write(json.dumps(row) + "\n")
    print(f"latency_study: {step['name']}: exit {r.returncode} in {seconds:.0f} s", file=sys.stderr, flush=True)
    if row["rc"] != 0:
        print(f"latency_study: {step['name']} failed (exit {r.returncode}); fix and rerun: finished steps are kept",
              file=sys.stderr)
        raise SystemExit(1)
    return row


def _pct(v) -> str:
    return "–" if v is None else f"{v:.0%}"


def _f(v, fmt=".3f") -> str:
    return "–" if v is None else format(v, fmt)


def write_readme(args, steps, done, started: str) -> Path:
    m = machine()
    versions = {}
    try:
        from nas.latency import BACKENDS

        for b in args.backends:
            versions.update(BACKENDS[b].versions())
    except Exception:  # noqa: BLE001 - a README is still written
        pass
    L = [f"# Latency: the protocol, the floor, the corrected predictor{' (QUICK SMOKE RUN: not results)' if args.quick else ''}",
         "",
         f"Made by `python scripts/latency_study.py {' '.join(shlex.quote(a) for a in args.argv)}` "
         f"(issue 26); started {started}, this README written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
         f"Machine: {m['cpu']}, {m['cores']} cores, {platform.system()} {platform.release()}; "
         + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
         f"Seeds: the overhead's networks {FIT_SEED} (the skeleton first), the correction's members {REFIT_SEED}, "
         f"the held-out validation members {VALIDATE_SEED} (drawn skipping every fitted member); searches seed 0.",
         "", "## Steps (the exact commands, the load around each)", "",
         "| step | command | exit | time | load before (other work) | load after |", "|---|---|---|---|---|---|"]
    for s in steps:
        r = done.get(s["name"])
        if r is None:
            L.append(f"| {s['name']} | `{' '.join(s['command'])}` | not run | | | |")
            continue
        lb, la = r["load_before"], r["load_after"]
        L.append(f"| {s['name']} | `{r['command']}` | {r['rc']} | {r['seconds']:.0f} s | "
                 f"{lb['load1']:.2f} ({lb['others']:.2f}) | {la['load1']:.2f} |")
    L += ["", "## Validation: held-out members, each measured twice", "",
          "Floor: the share of members whose two measurements agree within ±10 % of their mean. Predictor: the "
          "share within ±10 % of the mean of the two (`predicted/floor` is their ratio). Targets (issue 26): "
          "floor ≥ 90 %, predictor ≥ 85 %, Spearman ≥ 0.95, predicting ≥ 1000× faster than measuring.", "",
          "| backend | n | floor | predictor within ±10 % | predictor/floor | RMSPE | worst | Spearman | FLOPs' Spearman "
          "| predict | measure | speed ratio |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in args.backends:
        r = (done.get(f"validate-{b}") or {}).get("result")
        if not r:
            L.append(f"| {b} | not run |||||||||||")
            continue
        L.append(f"| {b} | {r['n']} | **{_pct(r['floor'])}** | **{_pct(r['within_10pct'])}** | "
                 f"{_f(r['predictor_over_floor'], '.2f')} | {_pct(r['rmspe'])} | {r['worst_error']:+.0%} | "
                 f"{_f(r['spearman'])} | {_f(r['flops_spearman'])} | {r['seconds_per_prediction'] * 1e3:.2f} ms | "
                 f"{_f(r['seconds_per_measurement'], '.2f')} s | {_f(r['speed_ratio'], ',.0f')}× |")
    L += ["", "The same passes summarised by each statistic, raw and duet-normalised (floor / predictor within ±10 %; "
          "the correction was fitted on the protocol's own figure):", ""]
    for b in args.backends:
        r = (done.get(f"validate-{b}") or {}).get("result")
        if r and r.get("alternatives"):
            L.append(f"- {b}: " + "; ".join(f"{k} {v['floor_within_10pct']:.0%} / {v['predictor_within_10pct']:.0%}"
                                            for k, v in r["alternatives"].items()))
    L += ["", "## The correction (`nas-latency refit`)", ""]
    for b in args.backends:
        r = (done.get(f"refit-{b}") or {}).get("result")
        c = (r or {}).get("correction")
        if c and c.get("coef"):
            fit = c.get("fit") or {}
            L.append(f"- {b}: fitted on {fit.get('n')} members (seed {c['seed']}): "
                     + ", ".join(f"{n} {v * 1e3:+.4g} ms" for n, v in zip(c["features"], c["coef"]))
                     + f"; kept by leave-one-out: {(fit.get('selection') or {}).get('chosen')} (LOO RMSPE "
                     + ", ".join(f"{k} {v:.1%}" for k, v in ((fit.get('selection') or {}).get('loo_rmspe') or {}).items())
                     + f"); on its own members {_pct(fit.get('within_10pct'))} within ±10 %, RMSPE {_pct(fit.get('rmspe'))}.")
    e2e = [s for s in steps if s["kind"] == "search"]
    if e2e:
        L += ["", f"## End to end: `nas-search --target-latency X --latency-table lat-{args.e2e_backend}.json`", "",
              "The best of each search measured afterwards with the table's protocol (`best_latency_measured`).", "",
              "| target | predicted | measured | error | within ±10 % |", "|---|---|---|---|---|"]
        for s in e2e:
            r = (done.get(s["name"]) or {}).get("result")
            if not r:
                L.append(f"| {s['target_ms']:g} ms | not run | | | |")
            elif r.get("refused"):
                L.append(f"| {s['target_ms']:g} ms | refused (below the fastest member) | | | no |")
            else:
                L.append(f"| {s['target_ms']:g} ms | {_f(r['predicted'] and r['predicted'] * 1e3, '.2f')} ms | "
                         f"{_f(r['measured'] and r['measured'] * 1e3, '.2f')} ms | {_f(r['error'], '+.1%')} | "
                         f"{'yes' if r['within_10pct'] else 'no'} |")
    L += ["", "Every figure above is read from the files beside this README (`steps.jsonl`, `validate-*/validate.json`, "
          "`search-*/summary.json`, the tables); rerun the command to finish an interrupted study.", ""]
    notes = args.output / "notes.md"  # what the files cannot say (conditions, reading), kept beside them
    if notes.exists():
        L += [notes.read_text()]
    path = args.output / "README.md"
    atomic_write_text(path, "\n".join(L))
    return path


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, help="default results/latency/protocol (--quick: /tmp/latency-study-quick)")
    ap.add_argument("--quick", action="store_true", help="a smoke run of every step (torch, tiny counts); not results")
    ap.add_argument("--backends", help="comma-separated (default onnxruntime,torch; --quick: torch)")
    ap.add_argument("--refit-members", type=int, help="default 30 (--quick: 8)")
    ap.add_argument("--validate-members", type=int, help="default 50 (--quick: 6)")
    ap.add_argument("--targets", help="end-to-end latency targets in ms (default 5,10,20; --quick: 40)")
    ap.add_argument("--e2e-backend", help="the backend of the end-to-end searches (default onnxruntime; --quick: torch)")
    ap.add_argument("--search-budget", type=int, help="trials per search (default 50; --quick: 3)")
    ap.add_argument("--no-duet", dest="duet", action="store_false",
                    help="tables without duet normalisation (validate still times the reference and reports both)")
    ap.add_argument("--allow-load", action="store_true", help="run even with other work on the machine (not results)")
    ap.add_argument("--max-load", type=float, default=DEFAULT_MAX_LOAD,
                    help=f"other work allowed (1-minute load average less this script's own; default {DEFAULT_MAX_LOAD})")
    ap.add_argument("--dry-run", action="store_true", help="print the steps and the estimate, run nothing")
    args = ap.parse_args(argv)
    args.argv = argv
    q = args.quick
    args.output = args.output or (Path("/tmp/latency-study-quick") if q else ROOT / "results" / "latency" / "protocol")
    args.backends = (args.backends or ("torch" if q else "onnxruntime,torch")).split(",")
    args.refit_members = args.refit_members or (8 if q else 30)
    args.validate_members = args.validate_members or (6 if q else 50)
    args.targets = [float(t) for t in (args.targets or ("40" if q else "5,10,20")).split(",")]
    args.e2e_backend = args.e2e_backend or ("torch" if q else "onnxruntime")
    args.search_budget = args.search_budget or (3 if q else 50)
    if args.allow_load and not q:
        print("latency_study: WARNING: --allow-load writes figures measured beside other work into "
              f"{args.output}: they are not results", file=sys.stderr)
    steps = plan(args)
    log = args.output / "steps.jsonl"
    done = read_steps(log)
    todo = [s for s in steps if s["name"] not in done]
    est = estimate(todo, q)
    print(f"latency_study: {len(steps)} steps, {len(steps) - len(todo)} already done; estimated {est / 60:.0f} min "
          f"on an idle 2-core machine; output {args.output}", file=sys.stderr)
    for s in steps:
        print(f"  {'done ' if s['name'] in done else 'to do'} {s['name']}: {' '.join(s['command'])}", file=sys.stderr)
    if args.dry_run:
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    # the first finished step's start, so that a rerun (or a README-only rerun) keeps the study's own date
    first = min((d["load_before"]["time"] for d in done.values() if d.get("load_before")), default=None)
    started = (first.replace("T", " ")[:16] + " UTC") if first else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    t0 = time.perf_counter()
    for s in todo:
        done[s["name"]] = run_step(s, args, log)
        write_readme(args, steps, done, started)
    path = write_readme(args, steps, done, started)
    print(f"latency_study: all {len(steps)} steps done ({(time.perf_counter() - t0) / 60:.1f} min this run); "
          f"{path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
