"""Progress on stderr: a tqdm bar on a terminal, occasional plain lines in a log.

tqdm redraws its bar with carriage returns; written to a file or a pipe (a log, CI, ``nohup``) a
run becomes one line of tens of thousands of characters.  :func:`progress_bar` returns a tqdm bar
when the stream is a terminal and a :class:`LineProgress` otherwise, which writes one complete line
each time another :data:`EVERY_PERCENT` of the total is done or :data:`EVERY_SECONDS` have passed
since the last line (checked when progress is reported, so a stalled run stays quiet), and one at
the end::

    trials: 12/30 (40%), 1 min 05 s, ETA 1 min 37 s, best=0.7123

Both take tqdm's calls as the toolkit uses them (``update``, ``n``, ``refresh``, ``set_postfix``,
``set_postfix_str``, ``write``, ``close``), so a caller swaps ``tqdm(...)`` for
``progress_bar(...)`` and nothing else.
"""
from __future__ import annotations

import sys
import time

__all__ = ["progress_bar", "LineProgress", "EVERY_PERCENT", "EVERY_SECONDS"]

EVERY_PERCENT = 10
"""A line each time another this many percent of the total is done."""

EVERY_SECONDS = 30.0
"""... or when this many seconds have passed since the last line."""


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class LineProgress:
    """tqdm's interface as the toolkit uses it, printing occasional complete lines instead of a bar."""

    def __init__(self, total=None, *, desc: str | None = None, unit: str = "it", initial: int = 0, file=None,
                 every_percent: float = EVERY_PERCENT, every_seconds: float = EVERY_SECONDS, clock=time.monotonic,
                 **_tqdm_only):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = self._last_n = initial
        self.file = file if file is not None else sys.stderr
        self._every_percent, self._every_seconds, self._clock = every_percent, every_seconds, clock
        self._t0 = self._last_t = clock()
        self._postfix = ""
        self._closed = False

    # -- tqdm's calls
    def update(self, n: int = 1) -> None:
        self.n += n
        self._maybe_line()

    def refresh(self) -> None:
        self._maybe_line()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = str(s)

    def write(self, s: str, file=None, end: str = "\n") -> None:
        print(s, file=file if file is not None else self.file, end=end, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._last_n:
                self._line()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- lines
    def _step(self) -> float | None:
        return self.total * self._every_percent / 100 if self.total else None

    def _maybe_line(self) -> None:
        if self._closed or self.n == self._last_n:
            return
        step = self._step()
        crossed = step is not None and int(self.n // step) > int(self._last_n // step)
        if crossed or self._clock() - self._last_t >= self._every_seconds or (self.total and self.n >= self.total):
            self._line()

    def _line(self) -> None:
        now = self._clock()
        elapsed = now - self._t0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(_duration(elapsed))
        done = self.n - self._start_n
        if self.total and done > 0 and self.n < self.total:
            parts.append(f"ETA {_duration(elapsed / done * (self.total - self.n))}")
        if self._postfix:
            parts.append(self._postfix)
        prefix = f"{self.desc}: " if self.desc else ""
        print(prefix + ", ".join(parts), file=self.file, flush=True)
        self._last_n, self._last_t = self.n, now


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total=None, *, file=None, **kwargs):
    """A tqdm bar on ``file`` (default stderr) if it is a terminal, else a :class:`LineProgress`.

    ``kwargs`` are tqdm's (``desc``, ``unit``, ``initial``, ``leave``, ``dynamic_ncols``...); the
    plain-line form uses ``desc``, ``unit`` and ``initial`` and ignores the rest.
    """
    stream = file if file is not None else sys.stderr
    if _is_terminal(stream):
        from tqdm import tqdm

        return tqdm(total=total, file=stream, **kwargs)
    return LineProgress(total, file=stream, **kwargs)
