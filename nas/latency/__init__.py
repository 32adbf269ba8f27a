"""Latency: measured (:func:`measure_latency`, :class:`LatencyMeter`) and predicted from a per-layer table.

::

    from nas.latency import LatencyTable, predict
    table = LatencyTable.load("lat-cpu.json")      # validated; torch is not imported
    seconds = predict(spec, table)                 # sum of the spec's entries + the fitted overhead

Every measurement follows one protocol (:class:`Protocol`, :func:`time_callables`: one thread,
pinned, GC off, interleaved rounds, the inter-quartile mean, optionally duet-normalised), recorded
in every table and result.  A table (``nas-latency table``) holds the batch-1 time of every distinct
piece any member of a search space can contain (:func:`space_entries`), measured
alone on one backend (:data:`BACKENDS`: ``torch``, ``onnxruntime``, ``cuda``), and a
constant per-network overhead fitted on whole networks.  A spec with a piece the
table lacks raises :class:`MissingEntryError` naming it.

Importing this package is torch-free; measuring imports torch.
"""
from __future__ import annotations

from ._backends import BACKENDS, CLOCKS, Backend, BackendUnavailable, get_backend, machine
from ._build import (CHUNK, NET_CHUNK, build_table, check_environment, check_same_setup, fit_overhead,
                     measure_as_table, measure_entry, measure_network, measure_networks, network_pass, new_table,
                     reference_spec, space_members)
from ._keys import Entry, space_entries, spec_entries
from ._meter import Latency, LatencyMeter, measure_latency
from ._protocol import (DEFAULT_MAX_LOAD, STATISTICS, BusyMachine, Pass, Protocol, Timing, check_load, gc_paused,
                        iqr_mean, load_record, measuring, pinned, round_order, summarise, time_callables)
from ._table import (FEATURES, FIT_MODELS, FORMAT, VERSION, LatencyTable, MissingEntryError, TableError,
                     TablePredictor, fastest_member, fit_correction, fit_linear, predict, predict_breakdown,
                     spec_features)
from ._validate import agreement, floor_agreement, spearman, validate, write_report
from ._workflow import (FitError, complete_table, correction_members, fitted_fingerprints, open_table,
                        refit_correction, run_validation, validation_members)

__all__ = [
    # the one measurement protocol, and the machine's load
    "Protocol", "STATISTICS", "Pass", "Timing", "time_callables", "iqr_mean", "summarise", "round_order", "pinned",
    "gc_paused", "measuring", "load_record", "check_load", "BusyMachine", "DEFAULT_MAX_LOAD",
    # measured (the search's --target-latency)
    "Latency", "LatencyMeter", "measure_latency",
    # the table and the predictor (torch-free)
    "LatencyTable", "TableError", "MissingEntryError", "FORMAT", "VERSION", "predict", "predict_breakdown",
    "fastest_member", "FIT_MODELS", "fit_linear", "TablePredictor", "FEATURES", "spec_features", "fit_correction",
    # what the table is keyed by
    "Entry", "spec_entries", "space_entries",
    # backends and measuring
    "Backend", "BACKENDS", "CLOCKS", "BackendUnavailable", "get_backend", "machine",
    "check_environment", "check_same_setup", "space_members", "new_table", "build_table", "fit_overhead",
    "measure_entry", "measure_network", "measure_networks", "network_pass", "reference_spec", "measure_as_table",
    "CHUNK", "NET_CHUNK",
    # validation
    "agreement", "floor_agreement", "spearman", "validate", "write_report",
    # what nas-latency table, refit and validate run
    "open_table", "complete_table", "FitError", "validation_members", "run_validation", "correction_members",
    "refit_correction", "fitted_fingerprints",
]
