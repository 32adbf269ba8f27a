"""Progress on stderr: a tqdm bar on a terminal, occasional complete lines in a log (nas.progress)."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nas.progress import LineProgress, progress_bar

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_not_a_terminal_gives_plain_lines_every_tenth_and_at_the_end():
    out, clock = io.StringIO(), Clock()
    bar = progress_bar(total=100, desc="trials", unit="trial", file=out, clock=clock, dynamic_ncols=True, leave=False)
    assert isinstance(bar, LineProgress)
    for i in range(100):
        clock.t += 1.0
        bar.update(1)
        bar.set_postfix(best=f"{i / 100:.2f}")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 10  # 10 %, 20 %, ... 100 %
    assert lines[0] == "trials: 10/100 trial (10%), 10 s, ETA 1 min 30 s, best=0.08"
    assert lines[4] == "trials: 50/100 trial (50%), 50 s, ETA 50 s, best=0.48"
    assert lines[-1] == "trials: 100/100 trial (100%), 1 min 40 s, best=0.98"


def test_slow_progress_gives_a_line_every_30_seconds_and_resume_counts_eta_from_the_start():
    out, clock = io.StringIO(), Clock()
    bar = progress_bar(total=1000, initial=500, desc="train", unit="step", file=out, clock=clock)
    for _ in range(20):  # 20 steps of 10 s: never another 10 %, but a line each 30 s
        clock.t += 10.0
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 7  # at 30, 60, ... 180 s, and the last state on close
    assert lines[0] == "train: 503/1000 step (50%), 30 s, ETA 1 h 22 min"  # 3 steps in 30 s since resuming
    assert lines[-1].startswith("train: 520/1000 step (52%), 3 min 20 s")


def test_nothing_done_prints_nothing_and_write_passes_lines_through():
    out = io.StringIO()
    bar = progress_bar(total=5, desc="x", file=out)
    bar.refresh()
    bar.write("epoch 1/8: loss 1.0")
    bar.close()
    bar.close()
    assert out.getvalue() == "epoch 1/8: loss 1.0\n"


def test_setting_n_then_refresh_as_the_workers_loop_does():
    out, clock = io.StringIO(), Clock()
    bar = progress_bar(total=4, initial=1, desc="trials", unit="trial", file=out, clock=clock)
    clock.t = 5.0
    bar.n = 3
    bar.set_postfix(workers=2)
    bar.refresh()
    bar.set_postfix_str("a=1 b=1")
    bar.n = 4
    bar.refresh()
    bar.close()
    assert out.getvalue().splitlines() == ["trials: 3/4 trial (75%), 5 s, ETA 2 s, workers=2",
                                           "trials: 4/4 trial (100%), 5 s, a=1 b=1"]


def test_a_terminal_gets_tqdm():
    from tqdm import tqdm

    bar = progress_bar(total=3, desc="x", file=Tty())
    try:
        assert isinstance(bar, tqdm)
    finally:
        bar.close()


def test_every_progress_bar_goes_through_the_helper():
    """No module but nas/progress.py builds a tqdm bar itself."""
    offenders = []
    for folder in ("nas", "scaling", "search_spaces", "scripts", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "nas/progress.py":
                continue
            if re.search(r"^\s*(from tqdm|import tqdm)", path.read_text(), re.M):
                offenders.append(rel)
    assert offenders == []


def test_a_training_logged_to_a_file_is_a_few_short_lines(tmp_path):
    """nas-train with stderr redirected to a file: complete lines, no carriage returns (was one long line)."""
    log = tmp_path / "log"
    with open(log, "w") as err:
        r = subprocess.run([sys.executable, "-c", "import sys; from nas.cli.train import main; sys.exit(main())", "efficientnet-b0", "--steps", "20",
                            "--resolution", "16", "--limit-train", "320", "--limit-val", "64", "--json"],
                           stdout=subprocess.PIPE, stderr=err, text=True, timeout=300,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
    text = log.read_text()
    assert r.returncode == 0, text[-2000:]
    assert "\r" not in text
    lines = [ln for ln in text.splitlines() if ln.startswith("train ")]
    assert 2 <= len(lines) <= 11 and all(len(ln) < 200 for ln in lines), text
    assert lines[-1].startswith("train efficientnet-b0: 20/20 step (100%)")
