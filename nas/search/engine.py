"""The single-process backend: the ask/tell loop over a :class:`~nas.search.session.SearchSession`.

The budget counts COMPLETE trials: rerunning the same configuration on the same
storage runs only the remainder.  The loop writes only the study; the caller
writes the outputs (:func:`nas.search.outputs.write_outputs`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .config import SearchConfig
from .session import SearchResult, SearchSession, open_session

__all__ = ["run_local", "run_search"]


class _GracefulStop:
    """First Ctrl-C: finish the trial in flight, then stop; a second one interrupts it.

    An exception raised at an arbitrary point could leave the journal's file lock
    behind (the next write would wait on it forever), so the first signal only
    sets a flag.  The second raises KeyboardInterrupt: that trial is failed and
    re-queued.  Only installed in the main thread.
    """

    def __init__(self):
        self.requested = False
        self._old = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        import sys

        print("\nnas-search: stopping after the current trial (Ctrl-C again to abort it)", file=sys.stderr)

    def install(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handler)

    def uninstall(self):
        import signal

        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None


def run_local(session: SearchSession, *, progress: bool = False, started: float | None = None) -> SearchResult:
    """Run trials in this process until the budget of COMPLETE trials is met; returns the result.

    KeyboardInterrupt stops the loop cleanly: the trial in flight is failed and
    re-queued, and the result has ``interrupted=True``.  ``started``: a
    ``time.perf_counter()`` reading the result's seconds count from (default: now).
    """
    from optuna.trial import TrialState

    t_start = time.perf_counter() if started is None else started
    budget = session.config.budget
    done = session.count(TrialState.COMPLETE)
    attempts, interrupted, stopped = 0, False, None
    best_reward = session.best_reward()
    stop = _GracefulStop()
    bar = None
    if progress:
        from ..progress import progress_bar

        bar = progress_bar(total=budget, initial=min(done, budget), desc="trials", unit="trial", dynamic_ncols=True)
        if best_reward is not None:
            bar.set_postfix(best=f"{best_reward:.4f}")
    try:
        stop.install()
        while done < budget:
            if stop.requested:
                interrupted = True
                break
            if attempts >= session.max_attempts:
                stopped = f"stopped after {attempts} failed or pruned attempts"
                break
            trial = session.study.ask()
            if session.run_trial(trial) != "complete":
                attempts += 1
                continue
            done += 1
            r = trial.user_attrs.get("reward")
            if r is not None and (best_reward is None or r > best_reward):
                best_reward = r
            if bar is not None:
                bar.update(1)
                bar.set_postfix(best=f"{best_reward:.4f}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()
    return session.result(seconds=time.perf_counter() - t_start, interrupted=interrupted, stopped_reason=stopped)


def run_search(cfg: SearchConfig, *, output: str | Path | None = None, progress: bool = False, estimator=None,
               dataset=None, log: Callable[[str], None] | None = None) -> SearchResult:
    """Open the session of ``cfg`` and run (or resume) it in this process; writes only the study.

    ``estimator`` overrides the one ``cfg`` names (tests pass a cheap fake).
    """
    t0 = time.perf_counter()
    session = open_session(cfg, output=output, estimator=estimator, dataset=dataset, log=log)
    return run_local(session, progress=progress, started=t0)
