"""Local scale-out: ``nas-search --workers N`` runs N OS processes on one persistent Optuna study.

Three phases, so that every worker sees the same study and the output folder is
written once, by the parent, with the local backend's own code:

1. **set-up** (parent): the caller's session (:func:`nas.search.session.open_session`,
   role ``owner``) has created or loaded the study, failed and re-queued trials
   left RUNNING by a killed run, scored the references and the proxy calibration
   sample (stored in the study), and enqueued EfficientNet-B0 in a fresh study.
2. **workers**: N spawned processes each rebuild the session from the same
   configuration (role ``worker``) and run its objective.  Budget accounting is
   shared through the storage: under a file lock a worker counts COMPLETE and RUNNING
   trials and asks for a new trial only while ``complete + running < budget``;
   a trial that fails or is pruned frees its slot.  The final number of
   COMPLETE trials is therefore exactly the budget, with no duplicate trial
   numbers (Optuna numbers them in the storage) and no lost trials.
3. **collect** (parent): the session's :meth:`~nas.search.session.SearchSession.result`;
   the caller writes outputs with :func:`nas.search.write_outputs`, exactly as for one process.

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
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from .config import SearchConfig
from .objective import remember
from .session import SearchResult, SearchSession, estimator_for, open_session, recover_stale_trials

__all__ = ["run_workers", "budget_lock_path", "WORKER_POLL_S"]

WORKER_POLL_S = 0.2  # a worker waiting for other workers' trials re-checks this often


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


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent dies (kill -9 of nas-search must not leave orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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


def _worker_main(cfg: SearchConfig, index: int, lock_path: str, threads: int, failed_before: int,
                 parent: int) -> tuple:
    """One worker process: ask/tell until the shared budget is used up; returns (kind, index, detail)."""
    import torch
    from optuna.trial import TrialState

    torch.set_num_threads(threads)
    try:
        estimator = _Interruptible(estimator_for(cfg))
        session = open_session(cfg, role="worker", worker=index, estimator=estimator)
        signal.signal(signal.SIGINT, estimator.on_sigint)
        study, budget = session.study, cfg.budget
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
                if complete >= budget:
                    return ("done", index, n_done)
                if failed >= session.max_attempts:
                    return ("stopped", index, f"stopped after {failed} failed or pruned attempts")
                trial = study.ask() if complete + running < budget else None
                if trial is not None:  # what other workers learned: no re-estimating a known failure
                    remember(session.memo, trials)
            if trial is None:  # every remaining slot is held by a running trial: one may still fail
                time.sleep(WORKER_POLL_S)
                continue
            try:
                if session.run_trial(trial) == "complete":
                    n_done += 1
            except KeyboardInterrupt:
                return ("interrupted", index, n_done)
    except KeyboardInterrupt:
        return ("interrupted", index, 0)
    except Exception as e:  # report to the parent in one line; the parent decides the exit status
        return ("error", index, f"{type(e).__name__}: {e}".splitlines()[0][:500])


def _worker_entry(argv=None) -> int:
    """``python -m nas.search.workers JSON``: one worker; prints one JSON line (kind, index, detail) on stdout."""
    _die_with_parent()
    a = json.loads((argv or sys.argv[1:])[0])
    if os.getppid() != a["parent"]:
        return 1
    try:
        kind, index, detail = _worker_main(SearchConfig.from_dict(a["config"]), a["index"], a["lock"], a["threads"],
                                           a["failed_before"], a["parent"])
    except KeyboardInterrupt:
        kind, index, detail = "interrupted", a["index"], 0
    print(json.dumps({"kind": kind, "index": index, "detail": detail}), flush=True)
    return 0


def run_workers(session: SearchSession, workers: int, *, progress: bool = False, threads: int | None = None,
                started: float | None = None) -> SearchResult:
    """Run (or resume) the search of ``session`` (role ``owner``) with ``workers`` processes; writes only the study.

    Each worker rebuilds the session from ``session.config`` (so an estimator the
    config cannot rebuild, one passed as an object, never reaches the workers: use
    ``EstimatorConfig.factory``).  ``threads``: torch threads per worker (default
    1 for proxies, cores // workers for training).  ``started``: a ``time.perf_counter()``
    reading the result's seconds count from (default: now).
    """
    import subprocess

    from optuna.trial import TrialState

    t0 = time.perf_counter() if started is None else started
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if session.role != "owner":
        raise ValueError(f"run_workers needs the owner's session, not a {session.role}'s")
    cfg = session.config
    failed_before = session.count(TrialState.FAIL, TrialState.PRUNED)
    if threads is None:
        threads = 1 if session.estimator.kind == "proxy" else max(1, (os.cpu_count() or 1) // workers)

    # fresh interpreters (``python -m nas.search.workers``), not multiprocessing: no fork after
    # torch's threads exist, and no re-import of the caller's __main__ (a console script, a test)
    lock = str(budget_lock_path(session.storage, session.study_name))
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(workers)]
    procs: list = []
    interrupted = False
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=cfg.budget, initial=min(session.count(TrialState.COMPLETE), cfg.budget),
                           desc="trials", unit="trial", dynamic_ncols=True)
    env = {**os.environ, "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore")}
    try:
        for i in range(workers):
            arg = json.dumps({"config": cfg.to_dict(), "index": i, "lock": lock, "threads": threads,
                              "failed_before": failed_before, "parent": os.getpid()})
            procs.append(subprocess.Popen([sys.executable, "-m", __name__, arg], stdout=subprocess.PIPE,
                                          stderr=logs[i], stdin=subprocess.DEVNULL, text=True, env=env))
        while any(p.poll() is None for p in procs):
            time.sleep(0.25)
            if bar is not None:
                bar.n = min(session.count(TrialState.COMPLETE), cfg.budget)
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
    # every worker has exited: a trial still RUNNING was a crashed worker's, failed and queued again
    recover_stale_trials(session.study)
    if errors and session.count(TrialState.COMPLETE) < cfg.budget and not interrupted:
        raise RuntimeError(f"{len(errors)} of {workers} worker(s) failed: {errors[0]}")
    return session.result(seconds=time.perf_counter() - t0, interrupted=interrupted, stopped_reason=stopped,
                          extra={"workers": workers, "backend": "local", "threads_per_worker": threads})


if __name__ == "__main__":
    sys.exit(_worker_entry())
