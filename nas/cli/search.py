"""``nas-search --target-flops 400M``: MnasNet-style architecture search (see :mod:`nas.search`).

Every input is validated before anything is created; the output folder gets the
study (a journal file, unless ``--storage``), best.json, trials.csv,
summary.json and pareto.png.  Rerunning the same command resumes.  Ctrl-C
writes the outputs for the best so far and exits 130.
"""
from __future__ import annotations

import sys
import time

from . import RuntimeFailure, command, load_data, tune_allocator
from .search_args import parse_config, parse_scale_out

__all__ = ["main", "parse_config", "parse_scale_out"]


@command("nas-search")
def main(argv=None) -> int:
    cfg, output, progress, threads, table = parse_config(argv)
    scale = parse_scale_out(argv, cfg)
    dataset = load_data(cfg.estimator.data, seed=cfg.seed)
    # as nas-latency and the study scripts do: measured latency (--target-latency) must be
    # measured as latency tables are (B0 took 38 ms with glibc's defaults, 32 ms tuned, on this machine)
    tune_allocator()
    import torch

    # One thread by default: on this shared 2-core machine two threads were 5-10x
    # *slower* (synflow 0.25 s vs 1.2-3.9 s per candidate; a B0 training step at
    # 16 px, batch 64: 1.4 s vs 8.6 s), the small tensors of a search being all overhead.
    torch.set_num_threads(threads)
    from ..search import open_session, summary_text, write_outputs
    from ..search.run import run_trials

    output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.estimator.name == f"supernet:{output / 'supernet'}":
        from ..search.run import train_run_supernet
        from ..supernet import SupernetError

        try:
            train_run_supernet(cfg, dataset, output / "supernet", progress=progress, threads=threads,
                               log=lambda m: print(f"nas-search: {m}", file=sys.stderr))
        except SupernetError as e:
            raise RuntimeFailure(str(e)) from None
    try:
        session = open_session(cfg, output=output, dataset=dataset, latency_table=table,
                               log=lambda m: print(m, file=sys.stderr))
        res = run_trials(session, progress=progress, threads=threads, started=started, **scale)
    except (ValueError, RuntimeError, ConnectionError) as e:  # a study with other directions, a worker failed, ...
        raise RuntimeFailure(" ".join(str(e).split())[:500] or type(e).__name__) from None
    if table is not None and res.best is not None and not res.interrupted:
        from ..search.run import measure_best

        res.extra["best_latency_measured"] = measure_best(res, table)
    write_outputs(res, output, weights=getattr(session.estimator, "state_dict", None))
    sys.stdout.write(summary_text(res) + f"\noutputs: {output}\n")
    if res.interrupted:
        print("nas-search: interrupted; outputs hold the best so far (rerun the same command to resume)",
              file=sys.stderr)
        return 130
    return 0


entry = main.entry
