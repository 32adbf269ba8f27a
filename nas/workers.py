"""Local scale-out: ``nas-search --workers N`` runs N OS processes on one persistent Optuna study.

Three phases, so that every worker sees the same study and the output folder is
written once, by the parent, with the local backend's own code:

1. **set-up** (parent): :func:`nas.search.run_search` with a budget of 0 creates
   or loads the study, marks trials left RUNNING by a killed run FAIL and
   re-queues them, scores the references and the proxy calibration sample
   (stored in the study), and enqueues EfficientNet-B0 in a fresh study.
2. **workers**: N spawned processes each open the study and run the same
   objective (:func:`nas.search.make_objective`).  Budget accounting is shared
   through the storage: under a file lock a worker counts COMPLETE and RUNNING
   trials and asks for a new trial only while ``complete + running < budget``;
   a trial that fails or is pruned frees its slot.  The final number of
   COMPLETE trials is therefore exactly the budget, with no duplicate trial
   numbers (Optuna numbers them in the storage) and no lost trials.
3. **collect** (parent): ``run_search`` again (the loop has nothing left to do)
   builds the :class:`nas.search.SearchResult`; the caller writes outputs with
   :func:`nas.search.write_outputs`, exactly as for one process.

Storage: the journal file is the default because several processes append to
it safely (Optuna's own recommendation; SQLite is not safe for concurrent
writers).  The file lock is in the temp dir, keyed by storage and study name, so
it only coordinates workers on one machine; for several machines use the Ray
backend.  Workers die with their parent (``PR_SET_PDEATHSIG``), so after a
``kill -9`` the same command finds their trials RUNNING, fails and re-queues
them, and runs only the remainder.

Seeds: worker ``i`` samples with ``seed + i``; identical seeds would make the
random start-up phase propose the same configurations in every worker.  A run
with several workers is therefore not bit-reproducible (the order in which
results arrive changes what the sampler sees).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

from .search import JOURNAL_NAME, MAX_FAILURE_FACTOR, SearchConfig, SearchResult, estimator_for

__all__ = ["run_workers", "budget_lock_path", "repair_journal", "WORKER_POLL_S"]

WORKER_POLL_S = 0.2  # a worker waiting for other workers' trials re-checks this often


def _storage_of(cfg: SearchConfig, output: Path):
    return cfg.storage or str(output / JOURNAL_NAME)


def budget_lock_path(storage: str, study_name: str) -> Path:
    """One lock file per (storage, study), outside the output folder (which must hold only the outputs)."""
    key = f"{os.path.abspath(storage) if '://' not in storage else storage}\0{study_name}"
    return Path(tempfile.gettempdir()) / f"nas-workers-{hashlib.sha1(key.encode()).hexdigest()[:16]}.lock"


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def repair_journal(path: str | Path) -> bool:
    """Undo what a process killed in the middle of an append leaves behind; True if anything changed.

    Two things: a torn last line (Optuna's reader tolerates one at the very end,
    but not once the next append follows it), and the journal's lock file
    (``<journal>.lock``, a symlink): a killed holder never removes it, and the
    next run would wait Optuna's 30 s grace period before breaking it.  Only call
    this while no other process uses the study (at start-up, before workers).
    """
    p = Path(path)
    changed = False
    lock = Path(str(p) + ".lock")  # optuna.storages.journal: LOCK_FILE_SUFFIX
    if os.path.lexists(lock):
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        changed = True
    if not p.is_file() or p.stat().st_size == 0:
        return changed
    with open(p, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return changed
        f.seek(0)
        content = f.read()
        f.truncate(content.rfind(b"\n") + 1)
    return True


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies (kill -9 of nas-search must not leave orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _accuracy_map(study, estimator_kind: str):
    """The same map the set-up phase fitted, rebuilt from the references and calibration stored in the study."""
    from .reward import IdentityMap, ProxyMap

    if estimator_kind != "proxy":
        return IdentityMap()
    refs = study.user_attrs["references"]
    calib = study.user_attrs.get("calibration") or []
    return ProxyMap.fit(refs["efficientnet-b0"]["score"], [s for s, _ in calib], [c for _, c in calib])


class _Interruptible:
    """Ctrl-C in a worker interrupts only the estimate, never a journal write.

    Optuna's journal lock is a symlink that a KeyboardInterrupt raised between
    acquire and release leaves behind; every process then waits 30 s (the
    lock's grace period) and the holder's release later fails.  So the SIGINT
    handler raises only while the estimator computes (it writes nothing; its
    per-epoch ``report`` hook does, so the hook runs unguarded) and otherwise
    leaves a flag that the worker loop checks between trials.
    """

    def __init__(self, estimator):
        self._est, self.kind = estimator, estimator.kind
        self.computing = False
        self.pending = False

    def __getattr__(self, name):
        return getattr(self._est, name)

    def on_sigint(self, signum, frame):
        if self.computing:
            self.computing = False
            raise KeyboardInterrupt
        self.pending = True

    def __call__(self, spec, report=None):
        def hook(epoch, value):
            self.computing = False
            try:
                if self.pending:
                    raise KeyboardInterrupt
                return report(epoch, value)
            finally:
                self.computing = True

        if self.pending:
            raise KeyboardInterrupt
        self.computing = True
        try:
            return self._est(spec, report=hook if report is not None else None)
        finally:
            self.computing = False


def _worker_main(cfg_dict: dict, storage: str, study_name: str, index: int, lock_path: str, threads: int,
                 failed_before: int, parent: int, estimator_factory: str | None = None) -> tuple:
    """One worker process: ask/tell until the shared budget is used up; returns (kind, index, detail)."""
    import optuna
    import torch
    from optuna.trial import TrialState

    from search_spaces import get_space

    from .latency import LatencyMeter
    from .samplers import MULTI_OBJECTIVE, make_sampler
    from .search import TRANSIENT_FAILURES, make_cost_fn, make_objective, open_study, run_trial

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = SearchConfig(**cfg_dict)
    try:
        if estimator_factory:
            estimator = _load_factory(estimator_factory)()
        else:
            estimator = estimator_for(cfg)
        space = get_space(cfg.space)
        reward = cfg.reward()
        multi = cfg.strategy in MULTI_OBJECTIVE
        out = Path(cfg.output) if cfg.output else Path(".")
        meter = LatencyMeter(threads=cfg.latency_threads,
                             cache_path=(out / "latency_cache.json") if cfg.metric == "latency" else None)
        cost_fn = make_cost_fn(cfg.metric, meter)
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=3) if estimator.kind == "train" and cfg.epochs > 1
                  else optuna.pruners.NopPruner())  # as run_search: nothing to prune with one epoch
        study = open_study(storage, study_name, make_sampler(cfg.strategy, seed=cfg.seed + index),
                           ["maximize", "minimize"] if multi else ["maximize"], pruner)
        memo: dict = {}
        estimator = _Interruptible(estimator)
        signal.signal(signal.SIGINT, estimator.on_sigint)
        objective = make_objective(space, estimator, reward, _accuracy_map(study, estimator.kind), cost_fn,
                                   multi_objective=multi, memo=memo)
        max_attempts = int(cfg.budget * MAX_FAILURE_FACTOR) + 20
        n_done = 0
        while True:
            if estimator.pending:
                return ("interrupted", index, n_done)
            if os.getppid() != parent:  # the parent is gone (no PDEATHSIG on this system)
                return ("orphaned", index, n_done)
            with _locked(Path(lock_path)):
                trials = study.get_trials(deepcopy=False)
                complete = sum(t.state == TrialState.COMPLETE for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                failed = sum(t.state in (TrialState.FAIL, TrialState.PRUNED) for t in trials) - failed_before
                if complete >= cfg.budget:
                    return ("done", index, n_done)
                if failed >= max_attempts:
                    return ("stopped", index, f"stopped after {failed} failed or pruned attempts")
                trial = study.ask() if complete + running < cfg.budget else None
                if trial is not None:
                    # failures seen by any worker fail at once here too (no re-estimating a known failure)
                    for t in trials:
                        fp, reason = t.user_attrs.get("fingerprint"), t.user_attrs.get("reason")
                        if (t.state == TrialState.FAIL and fp and reason and fp not in memo
                                and not str(reason).startswith(TRANSIENT_FAILURES)):
                            memo[fp] = {"reason": reason}
            if trial is None:  # every remaining slot is held by a running trial: one may still fail
                time.sleep(WORKER_POLL_S)
                continue
            try:
                if run_trial(study, trial, objective, len(space.param_names)) == "complete":
                    n_done += 1
            except KeyboardInterrupt:
                return ("interrupted", index, n_done)
    except KeyboardInterrupt:
        return ("interrupted", index, 0)
    except Exception as e:  # report to the parent in one line; the parent decides the exit status
        return ("error", index, f"{type(e).__name__}: {e}".splitlines()[0][:500])


def _load_factory(ref: str) -> Callable:
    """``"module:function"`` -> the function (how tests hand a cheap estimator to worker processes)."""
    import importlib

    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _worker_entry(argv=None) -> int:
    """``python -m nas.workers JSON``: one worker; prints one JSON line (kind, index, detail) on stdout."""
    import json

    _die_with_parent()
    a = json.loads((argv or sys.argv[1:])[0])
    if os.getppid() != a["parent"]:
        return 1
    try:
        kind, index, detail = _worker_main(a["config"], a["storage"], a["study_name"], a["index"], a["lock"],
                                           a["threads"], a["failed_before"], a["parent"], a.get("estimator_factory"))
    except KeyboardInterrupt:
        kind, index, detail = "interrupted", a["index"], 0
    print(json.dumps({"kind": kind, "index": index, "detail": detail}), flush=True)
    return 0


def run_workers(cfg: SearchConfig, workers: int, *, output: str | Path | None = None, progress: bool = False,
                dataset=None, estimator_factory: str | None = None, threads: int | None = None,
                log: Callable[[str], None] | None = None) -> SearchResult:
    """Run (or resume) ``cfg`` with ``workers`` processes; returns the result and writes only the study.

    ``estimator_factory`` (``"module:function"``, no arguments) replaces ``cfg.estimator`` in
    every process (tests pass a cheap fake).  ``threads``: torch threads per
    worker (default 1 for proxies, cores // workers for training).
    """
    import optuna
    from optuna.trial import TrialState

    from .search import open_study, run_search

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = Path(output or cfg.output or ".")
    cfg = replace(cfg, output=str(out))
    storage = _storage_of(cfg, out)
    if "://" not in storage:
        repair_journal(storage)
    study_name = cfg.study_name or cfg.default_study_name()
    estimator = _load_factory(estimator_factory)() if estimator_factory else None
    if estimator is None:
        estimator = estimator_for(cfg, dataset)

    # 1. set-up: study, stale-trial recovery, references, calibration, B0 enqueued
    run_search(replace(cfg, budget=0), output=out, estimator=estimator, log=log)
    from .samplers import MULTI_OBJECTIVE

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(storage, study_name, None,
                       ["maximize", "minimize"] if cfg.strategy in MULTI_OBJECTIVE else ["maximize"])

    def count(*states) -> int:
        return len(study.get_trials(deepcopy=False, states=states))

    failed_before = count(TrialState.FAIL, TrialState.PRUNED)
    if threads is None:
        threads = 1 if estimator.kind == "proxy" else max(1, (os.cpu_count() or 1) // workers)

    # 2. workers: fresh interpreters (``python -m nas.workers``), not multiprocessing: no fork after
    # torch's threads exist, and no re-import of the caller's __main__ (a console script, a test)
    import json
    import subprocess

    lock = str(budget_lock_path(storage, study_name))
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(workers)]
    procs: list = []
    interrupted = False
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.budget, initial=min(count(TrialState.COMPLETE), cfg.budget), desc="trials",
                   unit="trial", dynamic_ncols=True)
    env = {**os.environ, "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore")}
    try:
        for i in range(workers):
            arg = json.dumps({"config": asdict(cfg), "storage": storage, "study_name": study_name, "index": i,
                              "lock": lock, "threads": threads, "failed_before": failed_before,
                              "parent": os.getpid(), "estimator_factory": estimator_factory})
            procs.append(subprocess.Popen([sys.executable, "-m", "nas.workers", arg], stdout=subprocess.PIPE,
                                          stderr=logs[i], stdin=subprocess.DEVNULL, text=True, env=env))
        while any(p.poll() is None for p in procs):
            time.sleep(0.25)
            if bar is not None:
                bar.n = min(count(TrialState.COMPLETE), cfg.budget)
                bar.set_postfix(workers=sum(p.poll() is None for p in procs))
                bar.refresh()
    except KeyboardInterrupt:
        interrupted = True
        for p in procs:  # forward (a terminal's Ctrl-C already reached them; kill -INT did not)
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if bar is not None:
            bar.close()
    messages = []
    for i, p in enumerate(procs):
        lines = [ln for ln in (p.stdout.read() if p.stdout else "").splitlines() if ln.startswith("{")]
        if lines:
            m = json.loads(lines[-1])
            messages.append((m["kind"], m["index"], m["detail"]))
        elif p.returncode not in (0, -signal.SIGINT):
            logs[i].seek(0)
            tail = [ln for ln in logs[i].read().splitlines() if ln.strip()]
            messages.append(("error", i, f"exit {p.returncode}: {tail[-1] if tail else 'no output'}"))
        logs[i].close()
    errors = [m for kind, _, m in messages if kind == "error"]
    stopped = next((m for kind, _, m in messages if kind == "stopped"), None)
    interrupted = interrupted or any(kind == "interrupted" for kind, _, _ in messages)
    n_complete = count(TrialState.COMPLETE)
    if errors and n_complete < cfg.budget and not interrupted:
        raise RuntimeError(f"{len(errors)} of {workers} worker(s) failed: {errors[0]}")

    # 3. collect with the single-process code (nothing left to run when the budget is met)
    res = run_search(replace(cfg, budget=min(cfg.budget, n_complete)), output=out, estimator=estimator, log=log)
    res.config = cfg
    res.interrupted = interrupted
    res.stopped_reason = stopped or res.stopped_reason
    res.extra = {**res.extra, "workers": workers, "backend": "local", "threads_per_worker": threads}
    return res


if __name__ == "__main__":
    sys.exit(_worker_entry())
