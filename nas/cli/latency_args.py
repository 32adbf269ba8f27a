"""``nas-latency``'s arguments: the parser, and its names resolved (a table, a backend, a device, a space),
each a usage error (exit 2) naming what is wrong."""
from __future__ import annotations

from . import ArgumentParser, UsageError, non_negative_int, positive_int

__all__ = ["parser", "load_table", "backend_named", "backend_for_device", "space_named"]

DEFAULT_SPACE = "mnasnet-b0"  # search_spaces.DEFAULT_SPACE, read lazily


def _nonneg_float(label: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise UsageError(f"{label} must be a number, got {text!r}") from None
        if not 0 <= v < float("inf"):
            raise UsageError(f"{label} must be a finite number >= 0, got {text!r}")
        return v
    return parse


def _core(text: str):
    if text.strip().lower() in ("none", "off", "no"):
        return None
    try:
        v = int(text)
    except ValueError:
        raise UsageError(f"--core must be a core number, -1 (the last allowed core) or none, got {text!r}") from None
    if v < -1:
        raise UsageError(f"--core must be a core number, -1 (the last allowed core) or none, got {text!r}")
    return v


def _load_flags(p) -> None:
    from ..latency import DEFAULT_MAX_LOAD

    p.add_argument("--allow-load", action="store_true",
                   help="measure even when other work is running (warns; the load is recorded either way)")
    p.add_argument("--max-load", type=_nonneg_float("--max-load"), default=DEFAULT_MAX_LOAD,
                   help=f"other work allowed, as the 1-minute load average less this process's own share "
                        f"(default {DEFAULT_MAX_LOAD:g})")


def parser() -> ArgumentParser:
    from ..latency import BACKENDS, FEATURES, FIT_MODELS, STATISTICS

    ap = ArgumentParser(prog="nas-latency", description="Per-layer latency tables: build, validate, predict.")
    sub = ap.add_subparsers(dest="cmd", metavar="{table,validate,predict,refit}")
    sub.required = True

    t = sub.add_parser("table", help="measure every distinct layer of a search space (resumable)")
    t.add_argument("--space", default=DEFAULT_SPACE, help=f"search space (default {DEFAULT_SPACE})")
    t.add_argument("--backend", default="torch", help=f"one of {', '.join(BACKENDS)} (default torch)")
    t.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:N or auto (CUDA when present): where --backend torch runs; --device cuda "
                        "is the cuda backend (default: the backend's own device, cpu for torch and onnxruntime)")
    t.add_argument("--threads", type=positive_int("--threads"), default=1, help="CPU threads (default 1)")
    t.add_argument("--output", required=True, help="the table (JSON); an existing one is continued")
    t.add_argument("--resolution", type=positive_int("--resolution"),
                   help="input resolution (default: the space's, 224 for mnasnet-b0)")
    t.add_argument("--warmup", type=non_negative_int("--warmup"), default=10, help="untimed passes (default 10)")
    t.add_argument("--runs", type=positive_int("--runs"), default=30,
                   help="timed passes, split over --rounds interleaved rounds (default 30)")
    t.add_argument("--rounds", type=positive_int("--rounds"), default=3, help="interleaved rounds (default 3)")
    t.add_argument("--statistic", choices=STATISTICS, default="iqr_mean",
                   help="iqr_mean (default: the inter-quartile mean), median, or min_block_median")
    t.add_argument("--duet", action="store_true",
                   help="whole networks (refit, validate, a search's best) are timed beside a reference model "
                        "(the space's skeleton) and normalised by it")
    t.add_argument("--core", type=_core, default=-1,
                   help="pin to this core (default -1: the last core this process may use; none: no pinning)")
    t.add_argument("--pause", type=_nonneg_float("--pause"), default=0.0, help="seconds between rounds (default 0)")
    t.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall (default) or cpu: the thread's CPU time, with --threads 1 only; robust on a busy machine")
    t.add_argument("--evict-mb", type=_nonneg_float("--evict-mb"), default=0.0,
                   help="before each timed pass, sweep this many MB to evict the caches (CPU backends; default 0: off)")
    t.add_argument("--fit-networks", type=positive_int("--fit-networks"), default=8,
                   help="whole networks the overhead is fitted on: the skeleton + random members (default 8)")
    t.add_argument("--fit-model", choices=tuple(FIT_MODELS), default="constant", help="default constant")
    t.add_argument("--seed", type=non_negative_int("--seed"), default=0, help="seed of the fit networks (default 0)")
    t.add_argument("--limit", type=positive_int("--limit"), help="measure at most N entries in this run")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _load_flags(t)

    v = sub.add_parser("validate", help="predicted vs measured on random members of the table's space")
    v.add_argument("--table", required=True)
    v.add_argument("--device", default=None,
                   help="check that the table was measured on this device (auto, cpu, cuda, cuda:N); "
                        "default: the table's")
    v.add_argument("--n", type=positive_int("--n"), default=100, help="random members (default 100)")
    v.add_argument("--seed", type=non_negative_int("--seed"), default=1, help="seed of the members (default 1; the fit used 0)")
    v.add_argument("--warmup", type=non_negative_int("--warmup"), help="default: the table's")
    v.add_argument("--runs", type=positive_int("--runs"), help="default: the table's")
    v.add_argument("--output-dir", help="write validate.json and validate.png here")
    v.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    v.add_argument("--no-reference", action="store_true",
                   help="do not time the reference model beside the members (no duet comparison; not with a duet table)")
    _load_flags(v)

    p = sub.add_parser("predict", help="predicted latency of a spec (no measuring)")
    p.add_argument("spec", help="a preset name, a JSON file, or a JSON string")
    p.add_argument("--table", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")

    r = sub.add_parser("refit", help="--members N: measure N random whole members and fit the correction; "
                                     "--model: refit scale and overhead from the stored fit networks (no measuring)")
    r.add_argument("table_path", nargs="?", metavar="TABLE", help="the table (or --table)")
    r.add_argument("--table", help="the table (as TABLE)")
    r.add_argument("--model", choices=tuple(FIT_MODELS), help="refit scale and overhead only (no measuring)")
    r.add_argument("--members", type=positive_int("--members"),
                   help="measure this many random whole members and fit the correction on them")
    r.add_argument("--seed", type=non_negative_int("--seed"), default=2,
                   help="seed of the members (default 2; the overhead fit used 0, validate draws with 1 and skips them)")
    r.add_argument("--features", default=",".join(FEATURES),
                   help=f"the correction's features, comma-separated (default {','.join(FEATURES)})")
    r.add_argument("--ridge", type=_nonneg_float("--ridge"), default=None, help="ridge towards the plain table (default 0.01)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _load_flags(r)
    return ap


def load_table(path: str):
    from ..latency import LatencyTable, TableError

    try:
        return LatencyTable.load(path)
    except TableError as e:
        raise UsageError(str(e)) from None


def backend_named(name: str):
    from ..latency import get_backend

    try:
        backend = get_backend(name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
    reason = backend.unavailable()
    if reason:
        raise UsageError(f"--backend {name}: {reason}")
    return backend


def backend_for_device(backend: str, device: str | None) -> str:
    """``--backend`` and ``--device`` -> the backend that measures there (torch on CUDA is the cuda backend)."""
    from ..devices import DeviceError, resolve_device

    if device is None:
        return backend
    try:
        dev = resolve_device(device)
    except DeviceError as e:
        raise UsageError(f"--device: {e}") from None
    if dev.type == "cuda":
        if dev.index not in (None, 0):
            raise UsageError(f"--device {device}: latency tables are measured on cuda:0 (set CUDA_VISIBLE_DEVICES "
                             f"to pick another GPU)")
        if backend not in ("torch", "cuda"):
            raise UsageError(f"--backend {backend} runs on the CPU only; on --device {device} use --backend torch")
        return "cuda"
    if backend == "cuda" and str(device).strip().lower() != "auto":
        raise UsageError(f"--backend cuda measures on a GPU, not on --device {device}")
    return backend


def space_named(name: str):
    from search_spaces import get_space

    try:
        return get_space(name)
    except KeyError as e:
        raise UsageError(str(e.args[0])) from None
