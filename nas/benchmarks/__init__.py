"""Tabular NAS benchmarks shipped with the toolkit: a third party's ground truth, answered by lookup.

A benchmark here is a table (architecture key -> measured accuracies, parameters, FLOPs)
plus the two maps that make it usable from the toolkit: key -> :class:`nas.spec.Spec`
(whose built model must have exactly the table's parameters) and spec -> key (refusing
a spec that is not a member).  The search space over its members lives in
``search_spaces/`` and the lookup estimator in :mod:`nas.estimators.benchmark`.

:data:`BENCHMARKS` names them; each module offers ``load_table()``, ``spec_for_key``
and ``key_for_spec``.  What a new table must provide: ``docs/nas-bench-macro.md``.
"""
from __future__ import annotations

from . import nas_bench_macro

__all__ = ["BENCHMARKS", "nas_bench_macro"]

#: benchmark name -> its module (load_table, spec_for_key, key_for_spec, NotAMember)
BENCHMARKS = {"nas-bench-macro": nas_bench_macro}
