"""Scale-out benchmark: trials per minute, 1 vs 2 workers, local processes vs Ray Tune,
with a training-free proxy and with the (tiny) training estimator; Ray's start-up and per-trial
overhead measured with a no-op estimator.

    python benchmarks/bench_workers.py                       # writes results/workers/benchmark.md
    python benchmarks/bench_workers.py --proxy-budget 8 --train-budget 4 --no-write

Every search first gets its set-up (references, proxy calibration) done once in its study, so
the timed part is the trial loop only: N COMPLETE trials from an empty loop to the budget.
For "local, 1 worker" the timed call is nas.search.run_local (the default single-process
path); "local, 2 workers" is nas.search.workers.run_workers (two spawned interpreters; their start-up
is included); Ray rows include Tune's per-run set-up but not ray.init, which is reported
separately.  Studies live in temporary folders on the ordinary disk, as a user's would.
"""
from __future__ import annotations

import argparse
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


class NoopEstimator:
    """Scores an architecture by its analytic parameter count: a trial costs ~nothing, so time = overhead."""

    kind = "proxy"
    name = "noop"

    def __call__(self, spec, report=None):
        from nas.cost import cost
        from nas.estimators import Estimate

        return Estimate(math.log(cost(spec).params), self.kind)

    def describe(self):
        return {"name": self.name}


def noop():
    return NoopEstimator()


def _time_local(cfg, workers, out, dataset=None):
    from nas.search import open_session, run_local
    from nas.search.workers import run_workers

    session = open_session(cfg, output=out, dataset=dataset)  # set-up, untimed
    t0 = time.perf_counter()
    if workers == 1:
        res = run_local(session)
    else:
        res = run_workers(session, workers)
    dt = time.perf_counter() - t0
    assert res.n_complete == cfg.budget, (res.n_complete, cfg.budget)
    return dt, {}


def _time_ray(cfg, workers, out, dataset=None):
    import ray

    from nas.search import open_session
    from nas.search.ray_backend import run_ray

    session = open_session(cfg, output=out, dataset=dataset)
    tmp = tempfile.mkdtemp(prefix="bench-ray-")
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, _temp_dir=tmp, log_to_driver=False, logging_level="ERROR")
    init = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        res = run_ray(session, workers=workers)
        dt = time.perf_counter() - t0
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    assert res.n_complete == cfg.budget, (res.n_complete, cfg.budget)
    return dt, {"init": init}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy", default="proxy:synflow")
    ap.add_argument("--proxy-budget", type=int, default=16)
    ap.add_argument("--train-budget", type=int, default=6)
    ap.add_argument("--noop-budget", type=int, default=16)
    ap.add_argument("--limit-train", type=int, default=256)
    ap.add_argument("--limit-val", type=int, default=128)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ.setdefault("PYTHONWARNINGS", "ignore")

    import optuna
    import torch

    from nas.data import load_dataset
    from nas.search import EstimatorConfig, SearchConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    dataset = load_dataset("sample", seed=0)
    base = dict(target=4e8, strategy="random", seed=0)
    suites = [
        ("no-op (overhead)", SearchConfig(estimator=EstimatorConfig("noop", factory="bench_workers:noop"),
                                          budget=args.noop_budget, **base)),
        (args.proxy, SearchConfig(estimator=EstimatorConfig(args.proxy), budget=args.proxy_budget, **base)),
        (f"train (1 epoch, {args.limit_train} images, 32 px)",
         SearchConfig(estimator=EstimatorConfig("train", options={"epochs": 1, "resolution": 32,
                                                                  "limit_train": args.limit_train,
                                                                  "limit_val": args.limit_val}),
                      budget=args.train_budget, **base)),
    ]
    rows = []
    for label, cfg in suites:
        for backend, fn in (("local", _time_local), ("ray", _time_ray)):
            for workers in (1, 2):
                out = pathlib.Path(tempfile.mkdtemp(prefix="bench-workers-", dir=str(ROOT / "runs")
                                                    if (ROOT / "runs").is_dir() else None))
                try:
                    dt, extra = fn(cfg, workers, out, dataset)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                rows.append({"estimator": label, "backend": backend, "workers": workers, "trials": cfg.budget,
                             "seconds": dt, "per_min": 60 * cfg.budget / dt, **extra})
                print(f"{label:<34} {backend:<5} {workers}  {cfg.budget:>3} trials {dt:7.1f} s "
                      f"{60 * cfg.budget / dt:7.1f} trials/min" + (f"  (ray.init {extra['init']:.1f} s)" if extra else ""),
                      flush=True)
    load1 = os.getloadavg()

    def rate(est, backend, w):
        return next(r["per_min"] for r in rows if r["estimator"] == est and r["backend"] == backend and r["workers"] == w)

    lines = ["# Scale-out benchmark: trials per minute, local processes vs Ray Tune", "",
             f"Command: `python benchmarks/bench_workers.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip() + "  ",
             f"Machine: {os.cpu_count()} CPU cores, shared with other jobs; load average (1/5/15 min) "
             f"{load0[0]:.1f}/{load0[1]:.1f}/{load0[2]:.1f} at the start, {load1[0]:.1f}/{load1[1]:.1f}/{load1[2]:.1f} "
             "at the end.  Strategy random, seed 0, torch 1 thread per trial (proxies), studies on the ordinary disk.", "",
             "| estimator | backend | workers | trials | seconds | trials/min | vs local 1 worker |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["per_min"] / rate(r["estimator"], "local", 1)
        lines.append(f"| {r['estimator']} | {r['backend']} | {r['workers']} | {r['trials']} | {r['seconds']:.1f} | "
                     f"{r['per_min']:.1f} | {ratio:.2f}x |")
    noop = suites[0][0]
    inits = [r["init"] for r in rows if "init" in r]
    ray_noop = [r for r in rows if r["estimator"] == noop and r["backend"] == "ray"]
    loc_noop = next(r for r in rows if r["estimator"] == noop and r["backend"] == "local" and r["workers"] == 1)
    per_trial = [(r["seconds"] / r["trials"]) for r in ray_noop]
    lines += ["", "## Overheads", "",
              f"* `ray.init` on this machine: {min(inits):.1f}-{max(inits):.1f} s ({len(inits)} starts).",
              f"* No-op trial, local single process: {loc_noop['seconds'] / loc_noop['trials'] * 1e3:.0f} ms per trial "
              "(mostly Optuna's journal: one fsync per parameter, 42 parameters per trial).",
              "* No-op trial under Ray Tune: " + ", ".join(f"{r['workers']} worker(s) {r['seconds'] / r['trials']:.2f} s"
                                                          for r in ray_noop)
              + f" per trial, i.e. about {min(per_trial) - loc_noop['seconds'] / loc_noop['trials']:.1f} s of overhead per trial "
              "on top of the local path (Tune's controller, actor scheduling, result plumbing).",
              "", "## Ratios (2 workers / 1 worker, same backend)", ""]
    for est, _, _ in suites:
        lines.append(f"* {est}: local {rate(est, 'local', 2) / rate(est, 'local', 1):.2f}x, "
                     f"Ray {rate(est, 'ray', 2) / rate(est, 'ray', 1):.2f}x; Ray 2 workers vs local 2 workers "
                     f"{rate(est, 'ray', 2) / rate(est, 'local', 2):.2f}x")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        from nas.atomic import atomic_write_text

        (ROOT / "results" / "workers").mkdir(parents=True, exist_ok=True)
        atomic_write_text(ROOT / "results" / "workers" / "benchmark.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
