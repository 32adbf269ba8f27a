"""Latency: measured (:func:`measure_latency`, :class:`LatencyMeter`) and predicted from a per-layer table.

::

    from nas.latency import LatencyTable, predict
    table = LatencyTable.load("lat-cpu.json")      # validated; torch is not imported
    seconds = predict(spec, table)                 # sum of the spec's entries + the fitted overhead

A table (``nas-latency table``) holds the median batch-1 time of every distinct
piece any member of a search space can contain (:func:`space_entries`), measured
alone on one backend (:data:`BACKENDS`: ``torch``, ``onnxruntime``, ``cuda``), and a
constant per-network overhead fitted on whole networks.  A spec with a piece the
table lacks raises :class:`MissingEntryError` naming it.

Importing this package is torch-free; measuring imports torch.
"""
from __future__ import annotations

from ._backends import BACKENDS, CLOCKS, Backend, BackendUnavailable, get_backend, machine
from ._build import (build_table, check_environment, check_same_setup, fit_overhead, measure_as_table,
                     measure_entry, measure_network, new_table, space_members)
from ._keys import Entry, space_entries, spec_entries
from ._meter import Latency, LatencyMeter, measure_latency
from ._table import (FIT_MODELS, FORMAT, VERSION, LatencyTable, MissingEntryError, TableError, TablePredictor,
                     fastest_member, fit_linear, predict, predict_breakdown)
from ._validate import agreement, validate, write_report
from ._workflow import FitError, complete_table, open_table, run_validation, validation_members

__all__ = [
    # measured (the search's --target-latency)
    "Latency", "LatencyMeter", "measure_latency",
    # the table and the predictor (torch-free)
    "LatencyTable", "TableError", "MissingEntryError", "FORMAT", "VERSION", "predict", "predict_breakdown",
    "fastest_member", "FIT_MODELS", "fit_linear", "TablePredictor",
    # what the table is keyed by
    "Entry", "spec_entries", "space_entries",
    # backends and measuring
    "Backend", "BACKENDS", "CLOCKS", "BackendUnavailable", "get_backend", "machine",
    "check_environment", "check_same_setup", "space_members", "new_table", "build_table", "fit_overhead",
    "measure_entry", "measure_network", "measure_as_table",
    # validation
    "agreement", "validate", "write_report",
    # what nas-latency table and validate run
    "open_table", "complete_table", "FitError", "validation_members", "run_validation",
]
