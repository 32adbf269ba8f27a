"""What ``nas-latency table`` and ``validate`` do between their checks and their output (torch-free to import).

* :func:`open_table`: the table at ``out`` to continue (its set-up must be the wanted one), or a new one;
* :func:`complete_table`: measure what is missing (resumable), then fit the overhead; saved as it goes;
* :func:`validation_members` and :func:`run_validation`: random members of the table's space, each
  predictable, then predicted against measured (resumable), the report written.
"""
from __future__ import annotations

from pathlib import Path
from ..allocator import tune_allocator
from ..spec import Spec
from ._backends import Backend
from ._build import build_table, check_same_setup, fit_overhead, space_members
from ._keys import Entry
from ._table import LatencyTable, TableError, predict
from ._validate import validate, write_report

__all__ = ["FitError", "open_table", "complete_table", "validation_members", "run_validation"]


class FitError(TableError):
    """The overhead fit failed; the measured fit networks are kept (``refit --model constant`` needs no measuring)."""


def open_table(out: Path, wanted: LatencyTable, fit_model: str) -> LatencyTable:
    """The table at ``out`` when it exists (a :class:`TableError` unless it loads and has ``wanted``'s
    set-up; it is then fitted with ``fit_model``), else ``wanted``."""
    if not out.exists():
        return wanted
    table = LatencyTable.load(out)
    check_same_setup(table, wanted, out)
    table.fit["model"] = fit_model
    return table


def complete_table(table: LatencyTable, space, entries: dict[str, Entry], backend: Backend, out: Path, *,
                   resolution: int, fit_networks: int, seed: int, limit: int | None = None,
                   progress: bool = True) -> tuple[int, int]:
    """Measure at most ``limit`` missing entries into ``table`` (saved to ``out``); once none is missing, fit the
    overhead on ``fit_networks`` members (the skeleton first) and save.  Returns (entries before, still missing);
    a failed fit is a :class:`FitError`."""
    tune_allocator()  # the same allocator for entries and whole networks (nas.allocator)
    before = len(table.entries)
    build_table(table, entries, backend, path=out, limit=limit, progress=progress)
    missing = sum(k not in table.entries for k in entries)
    if missing:
        table.save(out)
        return before, missing
    nets = space_members(space, fit_networks, seed, resolution, skeleton_first=True)
    try:
        fit_overhead(table, nets, backend, path=out, progress=progress)
    except TableError as e:
        raise FitError(str(e)) from None
    table.save(out)
    return before, 0


def validation_members(table: LatencyTable, space, n: int, seed: int) -> list[Spec]:
    """``n`` random members of ``space`` at the table's resolution; a :class:`TableError` before any measuring
    when one has a piece the table lacks (the table is of another space)."""
    members = space_members(space, n, seed, table.resolution, skeleton_first=False)
    for spec in members:
        predict(spec, table)
    return members


def run_validation(table: LatencyTable, members: list[Spec], backend: Backend, *, warmup: int | None = None,
                   runs: int | None = None, progress: bool = True, out_dir: Path | None = None,
                   command: str | None = None) -> dict:
    """Predicted against measured for ``members``; with ``out_dir``, resumable from a checkpoint there and
    written as validate.json and validate.png (``command`` recorded)."""
    tune_allocator()
    checkpoint = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = out_dir / ".validate-partial.json"  # rerun the same command to resume
    report = validate(table, members, backend, warmup=warmup, runs=runs, progress=progress, checkpoint=checkpoint)
    if out_dir is not None:
        write_report(report, out_dir, command)
        checkpoint.unlink(missing_ok=True)
    return report
